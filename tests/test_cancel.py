"""Cancelling a run or one document: running activities stop through their heartbeats,
partial results are removed, and every unfinished document ends cancelled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.database import create_pool
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.runs import record_files

from .helpers import chunk_rows, run_input, unique, wait_for_run

BIG_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"


async def start_run(
    client: Client, settings: Settings, files: list[tuple[str, bytes]], **options: object
) -> tuple[str, list[str]]:
    pool = await create_pool(settings.database_url or "")
    try:
        run_id, document_ids = await record_files(pool, BlobStore.from_settings(settings), files)
    finally:
        await pool.close()
    await client.start_workflow(
        "IndexingWorkflow",
        run_input(settings, run_id, len(document_ids), **options),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
    )
    return run_id, document_ids


async def wait_until_parsing_ranges(client: Client, run_id: str, document_id: str) -> None:
    handle = client.get_workflow_handle(document_workflow_id(run_id, document_id))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            pending = (await handle.describe()).raw_description.pending_activities
            if any(p.activity_type.name == "parse_page_range" for p in pending):
                return
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("the big PDF never started parsing")


async def test_cancelling_a_run_stops_running_and_queued_documents(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    files = [
        ("GeoTopo.pdf", unique((corpus / BIG_PDF).read_bytes())),
        ("later-1.md", b"# Later\n\nqueued behind the big one"),
        ("later-2.md", b"# Later too\n\nalso queued"),
    ]
    run_id, (big, *queued) = await start_run(
        client,
        settings,
        files,
        max_concurrent_documents=1,
        split_pdf_pages=20,
        range_pages=10,
        heartbeat_timeout_s=5.0,
    )
    await wait_until_parsing_ranges(client, run_id, big)

    response = await api.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 202
    run = await wait_for_run(api, run_id, limit_s=60)

    assert run["status"] == "cancelled" and run["cancelled"] == 3
    assert {d["status"] for d in run["documents"]} == {"cancelled"}
    by_id = {d["document_id"]: d for d in run["documents"]}
    assert all("before this document started" in by_id[q]["error"] for q in queued)
    assert await chunk_rows(settings.database_url or "", big) == 0
    # Postgres records the outcome just before each workflow closes: wait for the close.
    run_handle = client.get_workflow_handle(run_workflow_id(run_id))
    child = client.get_workflow_handle(document_workflow_id(run_id, big))
    for handle in (run_handle, child):
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    # The running page ranges were asked to stop, not left to finish.
    events = [e.event_type for e in (await child.fetch_history()).events]
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED in events
    assert (await api.post(f"/v1/runs/{run_id}/cancel")).status_code == 409


async def test_cancelling_one_document_leaves_the_rest_of_the_run(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    files = [
        ("GeoTopo.pdf", unique((corpus / BIG_PDF).read_bytes())),
        ("note.md", b"# Note\n\nthis one should complete"),
    ]
    run_id, (big, note) = await start_run(
        client,
        settings,
        files,
        max_concurrent_documents=2,
        split_pdf_pages=20,
        range_pages=10,
        heartbeat_timeout_s=5.0,
    )
    await wait_until_parsing_ranges(client, run_id, big)
    assert (await api.post(f"/v1/documents/{big}/cancel")).status_code == 202
    run = await wait_for_run(api, run_id, limit_s=60)

    by_id = {d["document_id"]: d for d in run["documents"]}
    assert by_id[big]["status"] == "cancelled"
    assert by_id[note]["status"] == "completed" and by_id[note]["chunk_count"] >= 1
    assert (run["status"], run["completed"], run["cancelled"]) == ("completed_with_errors", 1, 1)
    assert await chunk_rows(settings.database_url or "", big) == 0
    assert (await api.post(f"/v1/documents/{big}/cancel")).status_code == 409
