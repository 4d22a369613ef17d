"""Retry, reindex and delete. A retry is an Update on the run (a closed run gets a new
execution); finished steps are not redone; a deleted document leaves search and storage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docindex.blobstore import BlobStore, tenant_prefix, upload_key
from docindex.config import Settings
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.models import RetryRequest
from docindex.steps.models import Embedded, Prepared
from workflows.starter import retry_run

from .conftest import TenantClient
from .fakes import FakeVoyage
from .helpers import chunk_rows, wait_for_run
from .test_providers import NOTE, VOYAGE_KEY, hosted_worker, index, provider_settings

CRAZYONES = "pdf/pypdf/crazyones.pdf"


async def step_results(client: Client, workflow_id: str) -> dict[str, object]:
    """Results of the latest execution's activities, decoded, by activity name."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    types = {
        Prepared: "prepare_document",
        Embedded: "embed_chunks",
    }
    names = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    results: dict[str, object] = {}
    for e in history.events:
        if e.event_type != EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            continue
        attrs = e.activity_task_completed_event_attributes
        name = names[attrs.scheduled_event_id]
        for model, activity_name in types.items():
            if name == activity_name:
                (results[name],) = await client.data_converter.decode(
                    attrs.result.payloads, [model]
                )
    return results


async def executions(client: Client, workflow_id: str) -> int:
    return len([w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")])


async def test_after_a_provider_outage_retry_reembeds_without_reparsing(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, workers: None
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    with FakeVoyage(api_key=VOYAGE_KEY) as voyage:
        broken = provider_settings(
            settings,
            embedder="voyage",
            voyage_api_key=SecretStr("revoked"),
            voyage_base_url=voyage.base_url,
        )
        async with hosted_worker(client, broken):
            run_id = await index(client, broken, NOTE)
        doc = (await api.get(f"/v1/runs/{run_id}")).json()["documents"][0]
        assert doc["error_type"] == "ProviderAuthError"

        fixed = broken.model_copy(update={"voyage_api_key": SecretStr(VOYAGE_KEY)})
        async with hosted_worker(client, fixed):
            accepted = await retry_run(
                client, fixed, run_id, 1, RetryRequest(error_types=["ProviderAuthError"])
            )
            assert accepted.document_ids == [doc["document_id"]]
            run = await wait_for_run(api, run_id)

    assert (run["status"], run["completed"], run["failed"]) == ("completed", 1, 0)
    results = await step_results(client, document_workflow_id(run_id, doc["document_id"]))
    prepared = results["prepare_document"]
    assert prepared.parsed.reused and prepared.chunked.reused
    assert not results["embed_chunks"].reused  # only the failed step really ran
    assert await executions(client, run_workflow_id(run_id)) == 2  # the closed run reopened


async def test_retry_reindex_and_bulk_retry_through_the_api(
    api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    started = datetime.now(UTC)
    files = [
        ("files", ("crazy.pdf", (corpus / CRAZYONES).read_bytes())),
        ("files", ("empty.pdf", b"")),
    ]
    accepted = (await api.post("/v1/documents", files=files)).json()
    run_id = accepted["run_id"]
    good, empty = (d["document_id"] for d in accepted["documents"])
    first = await wait_for_run(api, run_id)
    assert (first["completed"], first["failed"]) == (1, 1)
    chunks_before = await chunk_rows(settings.database_url or "", good)

    # Retry re-runs only the failed document (it fails the same way: bad input is final).
    retried = (await api.post(f"/v1/runs/{run_id}/retry", json={})).json()
    assert retried["document_ids"] == [empty]
    again = await wait_for_run(api, run_id)
    assert (again["completed"], again["failed"]) == (1, 1)

    # Reindex a completed document: every step's earlier result is reused, no duplicates.
    assert (await api.post(f"/v1/documents/{good}/reindex")).json()["document_ids"] == [good]
    final = await wait_for_run(api, run_id)
    assert {d["document_id"]: d["status"] for d in final["documents"]}[good] == "completed"
    results = await step_results(client, document_workflow_id(run_id, good))
    prepared, embedded = results["prepare_document"], results["embed_chunks"]
    assert prepared.parsed.reused and prepared.chunked.reused and embedded.reused, results
    assert await chunk_rows(settings.database_url or "", good) == chunks_before

    # Bulk replay by error class, limited to failures since this test started.
    bulk = (
        await api.post(
            "/v1/retries",
            json={
                "error_type": "EmptyDocument",
                "since": started.isoformat(),
            },
        )
    ).json()
    assert bulk == {"runs": 1, "documents": 1}
    await wait_for_run(api, run_id)
    missing = await api.post(f"/v1/runs/{uuid.uuid4()}/retry", json={})
    assert missing.status_code == 404


async def test_delete_removes_chunks_and_unshared_blobs(
    api: httpx.AsyncClient, tenant_client: TenantClient, settings: Settings
) -> None:
    body = f"# Heron notes\n\nGrey herons wade in shallow water. {uuid.uuid4()}".encode()
    runs = []
    # The same bytes uploaded by two tenants: two documents, each tenant's own stored file.
    other = await tenant_client()
    for http in (api, other):
        accepted = (await http.post("/v1/documents", files=[("files", ("h.md", body))])).json()
        runs.append(accepted)
        await wait_for_run(http, accepted["run_id"])
    first, second = (r["documents"][0] for r in runs)
    blobs = BlobStore.from_settings(settings)
    ours = upload_key(api.tenant, first["sha256"])  # type: ignore[attr-defined]
    theirs = upload_key(other.tenant, first["sha256"])  # type: ignore[attr-defined]
    assert ours != theirs and await blobs.exists(ours) and await blobs.exists(theirs)

    assert (await api.delete(f"/v1/documents/{first['document_id']}")).status_code == 204
    assert (await api.get(f"/v1/documents/{first['document_id']}")).status_code == 404
    assert await chunk_rows(settings.database_url or "", first["document_id"]) == 0
    assert not await blobs.exists(ours)
    assert await blobs.exists(theirs), "the other tenant's own copy"

    # A tenant cannot delete the other's document; its owner can.
    assert (await api.delete(f"/v1/documents/{second['document_id']}")).status_code == 404
    assert (await other.delete(f"/v1/documents/{second['document_id']}")).status_code == 204
    assert not await blobs.exists(theirs)
    assert not await blobs.list_objects(tenant_prefix(other.tenant))  # type: ignore[attr-defined]
    hits = (await api.post("/v1/search", json={"query": "grey herons wade", "top_k": 10})).json()
    assert all(
        h["document_id"] not in (first["document_id"], second["document_id"])
        for h in hits["results"]
    )
    assert (await api.delete(f"/v1/documents/{first['document_id']}")).status_code == 404


async def test_the_temporal_cli_retries_a_closed_run(
    api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    """The runbook's CLI equivalent of docindex retry: update-with-start on the run."""
    import asyncio
    import json

    from .conftest import temporal_cli

    accepted = (await api.post("/v1/documents", files=[("files", ("e.pdf", b""))])).json()
    run_id = accepted["run_id"]
    assert (await wait_for_run(api, run_id))["failed"] == 1
    options = {
        "cpu_task_queue": settings.cpu_task_queue,
        "gpu_task_queue": settings.gpu_task_queue,
        "workflow_task_queue": settings.workflow_task_queue,
    }
    # Not subprocess.run: it would block the event loop the in-process workers run on.
    process = await asyncio.create_subprocess_exec(
        temporal_cli(),
        "workflow",
        "execute-update-with-start",
        "--address",
        client.service_client.config.target_host,
        "--workflow-id",
        f"index-run/{run_id}",
        "--type",
        "IndexingWorkflow",
        "--task-queue",
        settings.workflow_task_queue,
        "--id-conflict-policy",
        "UseExisting",
        "--input",
        json.dumps({"run_id": run_id, "retry_only": True, "options": options}),
        "--update-name",
        "retry",
        "--update-input",
        json.dumps({"error_types": ["EmptyDocument"]}),
        "-o",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert accepted["documents"][0]["document_id"] in stdout.decode()
    run = await wait_for_run(api, run_id)
    assert run["failed"] == 1 and await executions(client, f"index-run/{run_id}") == 2
