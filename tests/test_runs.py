"""Run-level behaviour: bad input fails alone and at once; big runs continue-as-new."""

from __future__ import annotations

import asyncio
import io
import uuid
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.database import create_pool
from docindex.ids import run_workflow_id
from docindex.search_attributes import ERROR_TYPE
from docindex.spec import resolve_spec
from workflows.indexing_contract import RunSummary
from workflows.starter import resume_orphaned_runs, start_run

from .helpers import app_with, run_input, wait_for_run

# What every file of tests/data/broken/ must end as: (status, error type).
BROKEN_OUTCOMES: dict[str, tuple[str, str | None]] = {
    "empty.pdf": ("failed", "EmptyDocument"),
    "r6-user-password.pdf": ("failed", "EncryptedDocument"),
    "password_protected.xlsx": ("failed", "EncryptedDocument"),
    "GHOSTSCRIPT-698804-1-fuzzed.pdf": ("failed", "EmptyDocument"),
    "bug1606566.pdf": ("failed", "CorruptDocument"),
    "zen_of_python_corrupted.pdf": ("failed", "CorruptDocument"),
    "fake-power-point-malformed.pptx": ("failed", "CorruptDocument"),
    # Owner-password only: opens without a password, so it must index.
    "r4-owner-password.pdf": ("completed", None),
}


async def test_broken_files_fail_typed_on_first_attempt_and_the_rest_completes(
    api: httpx.AsyncClient, corpus: Path, client: Client
) -> None:
    broken = sorted((corpus / "broken").iterdir())
    assert {p.name for p in broken} == set(BROKEN_OUTCOMES), "a broken file without outcome"
    files = [
        ("files", ("crazyones.pdf", (corpus / "pdf/pypdf/crazyones.pdf").read_bytes())),
        *(("files", (p.name, p.read_bytes())) for p in broken),
        ("files", ("notes.pdf", b"this is plain text pretending to be a PDF\n")),
    ]
    accepted = (await api.post("/v1/documents", files=files)).json()
    run = await wait_for_run(api, accepted["run_id"])
    assert run["status"] == "completed_with_errors"
    outcome = {d["filename"]: (d["status"], d["error_type"]) for d in run["documents"]}
    assert outcome == {
        **BROKEN_OUTCOMES,
        "crazyones.pdf": ("completed", None),
        # Detected from the bytes, not the name: this "PDF" is text, and is indexed as such.
        "notes.pdf": ("completed", None),
        # Bytes of no format docindex indexes are refused at upload (test_hostile_input.py).
    }
    failed = [d for d in run["documents"] if d["status"] == "failed"]
    assert (run["completed"], run["failed"]) == (3, len(failed)) == (3, 7)
    assert all(d["error"] for d in failed)
    damaged = {d["filename"]: d["error"] for d in failed if d["error_type"] == "CorruptDocument"}
    assert "Adler-32 checksum" in damaged["zen_of_python_corrupted.pdf"]
    assert "no position or size" in damaged["fake-power-point-malformed.pptx"]

    # Operators find them the way the runbook says, with the reason attached.
    query = f"IndexingRunId = '{accepted['run_id']}' AND DocStatus = 'failed'"
    listed = {}
    for _ in range(50):  # visibility is eventually consistent
        listed = {wf.id: wf async for wf in client.list_workflows(query)}
        if len(listed) == len(failed):
            break
        await asyncio.sleep(0.2)
    assert sorted(listed) == sorted(
        f"index-doc/{accepted['run_id']}/{d['document_id']}" for d in failed
    )
    by_name = {d["document_id"]: d for d in failed}
    for wf in listed.values():
        doc = by_name[wf.id.rsplit("/", 1)[1]]
        assert wf.typed_search_attributes.get(ERROR_TYPE) == doc["error_type"]
        assert (await wf.memo_value("filename")) == doc["filename"]
    completed_query = f"IndexingRunId = '{accepted['run_id']}' AND DocStatus = 'completed'"
    assert len([wf async for wf in client.list_workflows(completed_query)]) == 3

    # One attempt each: no retry storm for input that can never parse.
    for doc in failed:
        history = await client.get_workflow_handle(
            f"index-doc/{accepted['run_id']}/{doc['document_id']}"
        ).fetch_history()
        attempts = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        ]
        # inspect (+ parse, for what only parsing finds) + recording the outcome
        assert attempts in ([1, 1], [1, 1, 1]), (doc["filename"], attempts)
        # Exactly one activity failed, once, with the typed, non-retryable error.
        failures = [
            e.activity_task_failed_event_attributes.failure
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED
        ]
        assert len(failures) == 1, (doc["filename"], failures)
        info = failures[0].application_failure_info
        assert (info.type, info.non_retryable) == (doc["error_type"], True), doc["filename"]
        detail = (await api.get(f"/v1/documents/{doc['document_id']}")).json()
        assert detail["status"] == "failed" and detail["error_type"] == doc["error_type"]
        assert detail["error"] == doc["error"]


async def test_recover_switch_indexes_damaged_files_with_the_damage_in_metadata(
    client: Client, corpus: Path, settings: Settings, workers: None
) -> None:
    """DOCINDEX_RECOVER_DAMAGED_FILES=true where the run is created puts recovery in the
    run's spec: the session's CPU worker, whose own settings say strict, indexes the damaged
    files, and their metadata says they were recovered and why."""
    assert not settings.recover_damaged_files
    names = ["zen_of_python_corrupted.pdf", "fake-power-point-malformed.pptx"]
    async with app_with(settings, client, recover_damaged_files=True) as (_, api):
        files = [("files", (n, (corpus / "broken" / n).read_bytes())) for n in names]
        accepted = (await api.post("/v1/documents", files=files)).json()
        run = await wait_for_run(api, accepted["run_id"])
        assert run["status"] == "completed", run
        assert run["pipeline"]["parser"]["recover_damaged"] is True
        for doc in run["documents"]:
            metadata = (await api.get(f"/v1/documents/{doc['document_id']}")).json()["metadata"]
            assert metadata["recovered"] is True, (doc["filename"], metadata)
            expected = "Adler-32" if doc["filename"].endswith(".pdf") else "no position or size"
            assert expected in metadata["damage"], metadata


async def record_run(
    settings: Settings, count: int, body: str | None = None, tenant: str = "default"
) -> str:
    """Store ``count`` small Markdown notes (or copies of ``body``) and record a run of
    ``tenant`` over them, as an upload does before it starts the workflow."""
    blobs = BlobStore.from_settings(settings)
    pool = await create_pool(settings.database_url or "")
    try:
        run_id = str(uuid.uuid4())
        docs = []
        for i in range(count):
            text = body or f"# Note {i}\n\nSmall document number {i} about otters."
            text += f"\n\n(run {run_id}, copy {i})"
            key, sha256, size = await blobs.put_upload(tenant, io.BytesIO(text.encode()))
            docs.append(
                repository.NewDocument(
                    document_id=str(uuid.uuid4()),
                    filename=f"note-{i}.md",
                    sha256=sha256,
                    size_bytes=size,
                    blob_key=key,
                )
            )
        await repository.create_run(
            pool,
            run_id,
            run_workflow_id(run_id),
            docs,
            spec=resolve_spec(settings),
            tenant_id=tenant,
        )
    finally:
        await pool.close()
    return run_id


async def test_a_run_whose_start_was_lost_is_resumed_once(
    default_api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    """The API died after storing the files and recording the run, before starting it."""
    api = default_api  # runs recorded without the API belong to 'default'
    run_id = await record_run(settings, 2)
    pool = await create_pool(settings.database_url or "")
    try:
        assert await resume_orphaned_runs(pool, client, settings, older_than_s=0) == [run_id]
        run = await wait_for_run(api, run_id)
        assert await resume_orphaned_runs(pool, client, settings, older_than_s=0) == []
    finally:
        await pool.close()
    assert run["status"] == "completed" and run["completed"] == 2
    assert not await start_run(client, settings, run_id, 2), "a finished run must not rerun"


async def test_a_run_queued_behind_absent_workers_is_started_once_not_every_pass(
    client: Client, settings: Settings
) -> None:
    """Its workflow exists but no worker polls its queue, so the run stays queued: the
    reconciler finds it started once and leaves it alone after, instead of asking
    Temporal to start it again every 30 s for as long as the workers are away."""
    run_id = await record_run(settings, 1)
    nobody = settings.model_copy(update={"workflow_task_queue": f"away-{uuid.uuid4().hex}"})
    assert await start_run(client, nobody, run_id, 1)  # as the upload does
    pool = await create_pool(settings.database_url or "")
    try:
        assert run_id in {r.run_id for r in await repository.resumable_runs(pool, 0)}
        assert run_id not in await resume_orphaned_runs(pool, client, nobody, older_than_s=0)
        assert run_id not in {r.run_id for r in await repository.resumable_runs(pool, 0)}
        row = await pool.fetchrow(
            "SELECT status, workflow_seen_at FROM runs WHERE run_id = $1", uuid.UUID(run_id)
        )
        assert row["status"] == "queued" and row["workflow_seen_at"] is not None
    finally:
        await client.get_workflow_handle(run_workflow_id(run_id)).terminate("test clean-up")
        await pool.execute("DELETE FROM runs WHERE run_id = $1", uuid.UUID(run_id))
        await pool.close()


async def test_large_run_continues_as_new_and_completes(
    default_api: httpx.AsyncClient, client: Client, settings: Settings
) -> None:
    """Seven documents with a batch of three: two continue-as-new hops, no lost document."""
    api = default_api  # runs recorded without the API belong to 'default'
    run_id = await record_run(settings, 7)
    handle = await client.start_workflow(
        "IndexingWorkflow",
        run_input(settings, run_id, 7, documents_per_execution=3, max_concurrent_documents=2),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
        result_type=RunSummary,
    )
    summary = await handle.result()
    assert (summary.status, summary.completed, summary.failed) == ("completed", 7, 0)

    # Walk the chain of runs: each execution started at most three children.
    executions = 0
    async for wf in client.list_workflows(f"WorkflowId = '{run_workflow_id(run_id)}'"):
        executions += 1
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        started = sum(
            e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
            for e in history.events
        )
        assert started <= 3
    assert executions == 3

    status = (await api.get(f"/v1/runs/{run_id}")).json()
    assert status["status"] == "completed" and status["completed"] == 7
    assert all(d["chunk_count"] >= 1 for d in status["documents"])


async def test_encrypted_pdf_parses_with_its_password_which_stays_out_of_history(
    api: httpx.AsyncClient, client: Client, corpus: Path
) -> None:
    secret = "asdfzxcv"  # the corpus's user password for this file
    data = (corpus / "broken/r6-user-password.pdf").read_bytes()
    wrong = (
        await api.post(
            "/v1/documents", files=[("files", ("r6.pdf", data))], data={"password": "nope"}
        )
    ).json()
    bad = await wait_for_run(api, wrong["run_id"])
    assert bad["documents"][0]["error_type"] == "EncryptedDocument"
    assert "wrong" in bad["documents"][0]["error"]
    # The same bytes again, now with the right password: a failed document is no duplicate.
    right = (
        await api.post(
            "/v1/documents", files=[("files", ("r6.pdf", data))], data={"password": secret}
        )
    ).json()
    assert not right["documents"][0]["duplicate"]
    ok = await wait_for_run(api, right["run_id"])
    assert ok["status"] == "completed" and ok["documents"][0]["chunk_count"] >= 1

    for run_id in (right["run_id"], wrong["run_id"]):
        histories = [await client.get_workflow_handle(f"index-run/{run_id}").fetch_history()]
        doc_id = (right if run_id == right["run_id"] else wrong)["documents"][0]["document_id"]
        histories.append(
            await client.get_workflow_handle(f"index-doc/{run_id}/{doc_id}").fetch_history()
        )
        for history in histories:
            # Raw event bytes hold payloads undecoded; to_json() would hide them in base64.
            raw = b"".join(e.SerializeToString() for e in history.events)
            assert b"r6.pdf" in raw  # the search does see payload contents
            assert secret.encode() not in raw and b"nope" not in raw
