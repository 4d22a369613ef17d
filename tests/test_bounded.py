"""Every cancel holds and every run is bounded (issue #17, items 4 and 6): cancels across
continue-as-new and of retried documents, retries that continue-as-new, capped request
fields, a queue nobody polls, run and document deadlines."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from temporalio.client import Client

from docindex.config import Settings
from docindex.ids import run_workflow_id

from .helpers import DATA, app_with, wait_for_run

BROKEN = (DATA / "broken" / "zen_of_python_corrupted.pdf").read_bytes()


def note(i: int) -> tuple[str, tuple[str, bytes, str]]:
    body = f"# Note {i}\n\nField note {i} {uuid.uuid4()}: the gauge read {i * 7} bar.\n"
    return ("files", (f"note-{i:03}.md", body.encode(), "text/markdown"))


def broken(i: int) -> tuple[str, tuple[str, bytes, str]]:
    return (
        "files",
        (f"broken-{i}.pdf", BROKEN + f"\n% {uuid.uuid4()}\n".encode(), "application/pdf"),
    )


async def documents(http: httpx.AsyncClient, run_id: str) -> dict[str, dict[str, Any]]:
    run = (await http.get(f"/v1/runs/{run_id}")).json()
    return {d["filename"]: d for d in run["documents"]}


async def executions(client: Client, workflow_id: str) -> int:
    return len([w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")])


async def test_a_cancel_holds_across_continue_as_new(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(
        settings, client, documents_per_run_execution=3, max_concurrent_documents=1
    ) as (_, http):
        response = await http.post("/v1/documents", files=[note(i) for i in range(9)])
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        late = response.json()["documents"][7]["document_id"]
        # Past the first execution's page: only Postgres can remember this cancel.
        assert (await http.post(f"/v1/documents/{late}/cancel")).status_code == 202
        final = await wait_for_run(http, run_id, limit_s=180)
        assert (final["completed"], final["cancelled"]) == (8, 1), final
        assert (await http.get(f"/v1/documents/{late}")).json()["status"] == "cancelled"
        assert await executions(client, run_workflow_id(run_id)) >= 3


async def test_retries_continue_as_new_and_a_cancel_of_a_waiting_retry_holds(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(
        settings, client, documents_per_run_execution=2, max_concurrent_documents=1
    ) as (_, http):
        response = await http.post("/v1/documents", files=[broken(i) for i in range(5)])
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        ids = [d["document_id"] for d in response.json()["documents"]]
        first = await wait_for_run(http, run_id, limit_s=180)
        assert first["failed"] == 5, first
        before = await executions(client, run_workflow_id(run_id))

        retried = await http.post(f"/v1/runs/{run_id}/retry")
        assert retried.status_code == 200, retried.text
        assert sorted(retried.json()["document_ids"]) == sorted(ids)
        # The last one waits behind the others (one at a time): cancel it before it starts.
        assert (await http.post(f"/v1/documents/{ids[-1]}/cancel")).status_code == 202
        final = await wait_for_run(http, run_id, limit_s=180)
        assert (final["failed"], final["cancelled"]) == (4, 1), final
        docs = await documents(http, run_id)
        assert docs["broken-4.pdf"]["status"] == "cancelled"
        assert all(docs[f"broken-{i}.pdf"]["error_type"] == "CorruptDocument" for i in range(4))
        # Four retried children at two per execution: the retry itself continued-as-new.
        assert await executions(client, run_workflow_id(run_id)) >= before + 2


async def test_fields_that_reach_history_are_capped(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/documents", files=[note(1)])
    run_id = response.json()["run_id"]
    await wait_for_run(api, run_id)
    too_many = await api.post(
        f"/v1/runs/{run_id}/retry", json={"error_types": [f"E{i}" for i in range(21)]}
    )
    assert too_many.status_code == 422
    too_long = await api.post(f"/v1/runs/{run_id}/retry", json={"error_types": ["E" * 101]})
    assert too_long.status_code == 422
    bulk = await api.post("/v1/retries", json={"error_type": "E" * 101})
    assert bulk.status_code == 422


async def test_a_queue_nobody_polls_fails_its_documents_typed(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(
        settings, client, gpu_task_queue=f"nobody-{uuid.uuid4().hex[:6]}", queue_deadline_s=2.0
    ) as (_, http):
        response = await http.post("/v1/documents", files=[note(1)])
        run_id = response.json()["run_id"]
        started = time.monotonic()
        final = await wait_for_run(http, run_id, limit_s=60)
        assert final["status"] == "failed", final
        (doc,) = final["documents"]
        assert doc["error_type"] == "QueueUnserved", doc
        assert "embed_chunks" in doc["error"]
        assert time.monotonic() - started < 30


async def test_a_run_past_its_deadline_stops_its_documents(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(
        settings,
        client,
        gpu_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
        run_deadline_s=3.0,
        max_concurrent_documents=1,
    ) as (_, http):
        response = await http.post("/v1/documents", files=[note(1), note(2)])
        run_id = response.json()["run_id"]
        final = await wait_for_run(http, run_id, limit_s=60)
        assert final["cancelled"] == 2, final
        for doc in final["documents"]:
            assert doc["error_type"] == "DeadlineExceeded", doc


async def test_a_document_past_its_deadline_times_out(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(
        settings, client, gpu_task_queue=f"nobody-{uuid.uuid4().hex[:6]}", document_deadline_s=2.0
    ) as (_, http):
        response = await http.post("/v1/documents", files=[note(1)])
        final = await wait_for_run(http, response.json()["run_id"], limit_s=60)
        (doc,) = final["documents"]
        assert (doc["status"], doc["error_type"]) == ("failed", "TimedOut"), doc
