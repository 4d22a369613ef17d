"""Graceful worker shutdown: SIGTERM a CPU worker in the middle of a parse.

Two workers are stopped at the same moment, each while parsing a document: one with a
graceful shutdown timeout longer than the parse, which finishes it before exiting; one with a
shorter one, which hands the parse back, and Temporal retries it on another worker at once
instead of waiting out the heartbeat timeout. Either way the run completes and nothing is lost.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docindex.config import Settings
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.search_attributes import ensure_registered
from workflows.indexing_contract import RunSummary

from .helpers import chunk_rows, first_pages, unique
from .processes import spawn_worker, stop_async, worker_env
from .test_cancel import start_run

BIG_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"
PAGES = 60  # seconds of parsing: long enough to be caught running, short enough for CI
# Far longer than the test may take: a retry can only have come from the hand-back.
HEARTBEAT_S = 300.0


async def parse_started_on(client: Client, run_id: str, document_id: str) -> int:
    """Wait until the document's parse runs on a worker; return that worker's pid."""
    handle = client.get_workflow_handle(document_workflow_id(run_id, document_id))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            pending = (await handle.describe()).raw_description.pending_activities
        except Exception:  # the child may not exist yet
            pending = []
        for p in pending:
            if p.activity_type.name == "prepare_document" and p.last_worker_identity:
                return int(p.last_worker_identity.split("@")[0])
        await asyncio.sleep(0.2)
    raise AssertionError("the parse never started")


async def parse_attempts(client: Client, run_id: str, document_id: str) -> list[tuple]:
    """(attempt, worker pid, last failure) of each prepare_document start, then ("completed",
    when)."""
    history = await client.get_workflow_handle(
        document_workflow_id(run_id, document_id)
    ).fetch_history()
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "prepare_document"
    }
    found = []
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            a = e.activity_task_started_event_attributes
            if a.scheduled_event_id in scheduled:
                found.append((a.attempt, int(a.identity.split("@")[0]), a.last_failure))
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            if e.activity_task_completed_event_attributes.scheduled_event_id in scheduled:
                found.append(("completed", e.event_time.ToDatetime(tzinfo=UTC).timestamp()))
    return found


async def test_sigterm_finishes_or_hands_back_running_parses(
    client: Client, settings: Settings, workers: None, corpus: Path, tmp_path: Path
) -> None:
    await ensure_registered(client, settings.temporal_namespace)
    cpu_queue = f"shutdown-cpu-{uuid.uuid4().hex[:6]}"

    def env(grace_s: float) -> dict[str, str]:
        return worker_env(
            settings,
            client,
            DOCINDEX_CPU_TASK_QUEUE=cpu_queue,
            DOCINDEX_CPU_WORKER_CONCURRENCY="1",
            DOCINDEX_WORKER_GRACEFUL_SHUTDOWN_S=str(grace_s),
        )

    patient = await spawn_worker("cpu", env(120), tmp_path / "patient.log")
    hasty = await spawn_worker("cpu", env(0.5), tmp_path / "hasty.log")
    others = []
    try:
        pdf = first_pages(corpus / BIG_PDF, PAGES)
        run_id, document_ids = await start_run(
            client,
            settings,
            [("a.pdf", unique(pdf)), ("b.pdf", unique(pdf))],
            cpu_task_queue=cpu_queue,
            split_pdf_pages=1000,  # one prepare_document activity, not page ranges
            heartbeat_timeout_s=HEARTBEAT_S,
        )
        # One document each (each worker runs one activity at a time).
        on = {await parse_started_on(client, run_id, d): d for d in document_ids}
        assert set(on) == {patient.pid, hasty.pid}
        patient.send_signal(signal.SIGTERM)
        hasty.send_signal(signal.SIGTERM)
        sigterm_at = time.time()
        # The rest of the run needs a CPU worker that is not shutting down.
        others.append(await spawn_worker("cpu", env(20), tmp_path / "other.log"))
        other = others[0].pid

        # Both stop by themselves, cleanly.
        codes = await asyncio.wait_for(asyncio.gather(patient.wait(), hasty.wait()), 90)
        assert codes == [0, 0]
        run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
        summary = await asyncio.wait_for(run.result(), 180)
    finally:
        await stop_async([patient, hasty, *others])

    assert (summary.status, summary.completed) == ("completed", 2)
    # The patient worker finished its parse after SIGTERM: one attempt, no retry.
    finished = await parse_attempts(client, run_id, on[patient.pid])
    assert [f[:2] for f in finished[:1]] == [(1, patient.pid)] and len(finished) == 2
    assert finished[1][1] > sigterm_at, "the parse had ended before SIGTERM: nothing tested"
    # The hasty one handed its parse back: retried at once on the other worker, after a
    # failure that is not a timeout (the heartbeat timeout is longer than this whole test).
    handed = await parse_attempts(client, run_id, on[hasty.pid])
    assert [f[:2] for f in handed[:1]] == [(2, other)] and handed[1][0] == "completed"
    last_failure = handed[0][2]
    assert last_failure.message and not last_failure.HasField("timeout_failure_info"), last_failure
    for document_id in document_ids:
        assert await chunk_rows(settings.database_url or "", document_id) > PAGES
