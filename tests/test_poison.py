"""Poison documents: a document whose parse kills its worker every time.

A CPU worker started as ``tests.faulty_worker`` with ``FAULT_KILL_ON_SHA256`` SIGKILLs itself
when it starts on that document, as a segfault or an out-of-memory kill in Docling would. The
worker is restarted each time (as the supervisor or the orchestrator would); Temporal notices
each death by the missed heartbeat. After ``poison_max_attempts`` the document is quarantined,
or, with a large queue configured, moved there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import uuid
from pathlib import Path

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus

from docindex import search_attributes as sa
from docindex.config import Settings
from docindex.ids import document_workflow_id, run_workflow_id
from workflows.indexing_contract import RunSummary

from .conftest import TenantClient
from .helpers import chunk_rows, unique, wait_for_run
from .processes import FAULTY_WORKER, KeptAlive, spawn_worker, stop_async, worker_env
from .test_cancel import start_run

POISON = "pdf/docling/code_and_formula.pdf"
GOOD = "pdf/docling/multi_page.pdf"
SMALL = "pdf/pypdf/crazyones.pdf"  # 11 kB
BIG = "office/docling/word_sample.docx"  # 104 kB: over the size threshold below, the poison not
BIG_BYTES = 100_000
# Robust under CI load: a busy 2-core machine can delay a live worker's heartbeat by seconds.
HEARTBEAT_S = 10.0


async def activity_attempts(client: Client, workflow_id: str) -> list[tuple[str, str, int, str]]:
    """(activity, task queue, attempt, how it ended) for every activity of a workflow,
    local activities included."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    started = {
        e.event_id: e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    ends = {
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: (
            "completed",
            "activity_task_completed_event_attributes",
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: (
            "failed",
            "activity_task_failed_event_attributes",
        ),
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: (
            "timed_out",
            "activity_task_timed_out_event_attributes",
        ),
    }
    found = []
    queue = ""  # a local activity runs on the worker, so on the queue, of its workflow
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            queue = e.workflow_execution_started_event_attributes.task_queue.name
        marker = e.marker_recorded_event_attributes
        if marker.marker_name == "core_local_activity":
            data = json.loads(marker.details["data"].payloads[0].data)
            how = "completed" if "result" in marker.details else "failed"
            found.append((data["activity_type"], queue, data["attempt"], how))
        if e.event_type in ends:
            how, field = ends[e.event_type]
            attrs = getattr(e, field)
            s = scheduled[attrs.scheduled_event_id]
            found.append(
                (
                    s.activity_type.name,
                    s.task_queue.name,
                    started[attrs.started_event_id].attempt,
                    how,
                )
            )
    return found


async def document_row(settings: Settings, document_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await conn.fetchrow(
            "SELECT status, error_type, error, chunk_count FROM documents WHERE document_id = $1",
            uuid.UUID(document_id),
        )
    finally:
        await conn.close()


async def test_poison_document_is_quarantined_and_the_run_goes_on(
    tenant_client: TenantClient, client: Client, settings: Settings, corpus: Path, tmp_path: Path
) -> None:
    poison = unique((corpus / POISON).read_bytes())
    good = unique((corpus / GOOD).read_bytes())
    cpu_queue = f"poison-cpu-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        settings,
        client,
        DOCINDEX_CPU_TASK_QUEUE=cpu_queue,
        # One activity at a time: the poison's crash costs no other document an attempt.
        DOCINDEX_CPU_WORKER_CONCURRENCY="1",
    )
    faulty = {**env, "FAULT_KILL_ON_SHA256": hashlib.sha256(poison).hexdigest()}
    async with KeptAlive("cpu", faulty, tmp_path / "cpu.log", FAULTY_WORKER) as cpu:
        run_id, (poison_id, good_id) = await start_run(
            client,
            settings,
            [("poison.pdf", poison), ("good.pdf", good)],
            cpu_task_queue=cpu_queue,
            heartbeat_timeout_s=HEARTBEAT_S,
            poison_max_attempts=2,
        )
        run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
        summary = await asyncio.wait_for(run.result(), timeout=300)
        deaths = list(cpu.exits)

    # The worker died once per attempt, killed by the poison, and no more.
    assert deaths == [-signal.SIGKILL] * 2, deaths
    assert (summary.status, summary.completed, summary.quarantined, summary.failed) == (
        "completed_with_errors",
        1,
        1,
        0,
    )

    row = await document_row(settings, poison_id)
    assert (row["status"], row["error_type"]) == ("quarantined", "WorkerLost")
    assert "quarantined: prepare_document lost its worker on every attempt" in row["error"]
    assert cpu_queue in row["error"]
    assert await chunk_rows(settings.database_url or "", poison_id) == 0
    good_row = await document_row(settings, good_id)
    assert good_row["status"] == "completed"
    assert await chunk_rows(settings.database_url or "", good_id) == good_row["chunk_count"] > 0

    # Two attempts, each ended by the heartbeat timeout; then the child failed as WorkerLost
    # with its DocStatus search attribute saying quarantined.
    child_id = document_workflow_id(run_id, poison_id)
    parses = [a for a in await activity_attempts(client, child_id) if a[0] == "prepare_document"]
    assert parses == [("prepare_document", cpu_queue, 2, "timed_out")]
    child = await client.get_workflow_handle(child_id).describe()
    assert child.status == WorkflowExecutionStatus.FAILED
    assert child.typed_search_attributes.get(sa.DOC_STATUS) == "quarantined"

    # The API reports it too, from Postgres once the run has closed (start_run records runs
    # for the default tenant).
    api = await tenant_client("default")
    body = (await api.get(f"/v1/runs/{run_id}")).json()
    statuses = {d["document_id"]: d["status"] for d in body["documents"]}
    assert statuses == {poison_id: "quarantined", good_id: "completed"}
    assert (body["completed"], body["failed"], body["quarantined"]) == (1, 0, 1)

    # The cause fixed (here: the product's own worker, no fault injected), a retry of
    # WorkerLost documents indexes it like any other.
    fixed = await spawn_worker("cpu", env, tmp_path / "f")
    try:
        retried = await api.post(f"/v1/runs/{run_id}/retry", json={"error_types": ["WorkerLost"]})
        assert retried.status_code == 200, retried.text
        assert retried.json()["document_ids"] == [poison_id]
        body = await wait_for_run(api, run_id, limit_s=180)
    finally:
        await stop_async([fixed])
    assert (body["status"], body["completed"]) == ("completed", 2)
    assert (await document_row(settings, poison_id))["status"] == "completed"


async def test_poison_and_big_documents_go_to_the_large_queue(
    client: Client, settings: Settings, corpus: Path, tmp_path: Path
) -> None:
    poison = unique((corpus / POISON).read_bytes())
    big = unique((corpus / BIG).read_bytes())
    good = unique((corpus / SMALL).read_bytes())
    assert len(good) < len(poison) < BIG_BYTES < len(big)
    suffix = uuid.uuid4().hex[:6]
    cpu_queue, large_queue = f"poison-cpu-{suffix}", f"poison-large-{suffix}"
    base = {"DOCINDEX_CPU_TASK_QUEUE": cpu_queue, "DOCINDEX_LARGE_TASK_QUEUE": large_queue}
    cpu_env = worker_env(
        settings,
        client,
        **base,
        FAULT_KILL_ON_SHA256=hashlib.sha256(poison).hexdigest(),
        DOCINDEX_CPU_WORKER_CONCURRENCY="1",
    )
    # The large worker has what the CPU workers lacked (in production: memory), here: no fault.
    large = await spawn_worker("large", worker_env(settings, client, **base), tmp_path / "l.log")
    try:
        async with KeptAlive("cpu", cpu_env, tmp_path / "cpu.log", FAULTY_WORKER) as cpu:
            run_id, (poison_id, big_id, good_id) = await start_run(
                client,
                settings,
                [("poison.pdf", poison), ("big.docx", big), ("good.pdf", good)],
                cpu_task_queue=cpu_queue,
                large_task_queue=large_queue,
                large_document_bytes=BIG_BYTES,
                heartbeat_timeout_s=HEARTBEAT_S,
                poison_max_attempts=2,
            )
            run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
            summary = await asyncio.wait_for(run.result(), timeout=300)
            deaths = list(cpu.exits)
    finally:
        await stop_async([large])

    assert deaths == [-signal.SIGKILL] * 2, deaths
    assert (summary.status, summary.completed) == ("completed", 3)

    # The poison lost its CPU worker twice, then its parse ran on the large queue; the
    # store step is Postgres I/O, a local activity of the workflow worker.
    steps = await activity_attempts(client, document_workflow_id(run_id, poison_id))
    parses = [(q, attempt, how) for name, q, attempt, how in steps if name == "prepare_document"]
    assert parses == [(cpu_queue, 2, "timed_out"), (large_queue, 1, "completed")]
    assert {q for name, q, _, _ in steps if name == "store_document"} == {
        settings.workflow_task_queue
    }

    # The big document went to the large queue from its first step; the small one did not.
    # (Embedding has its own queue; storing and recording events are local activities of
    # the workflow worker.)
    big_queues = {
        q
        for name, q, _, _ in await activity_attempts(client, document_workflow_id(run_id, big_id))
        if name not in ("embed_chunks", "store_document", "record_document_event")
    }
    assert big_queues == {large_queue}
    good_queues = {
        q
        for name, q, _, _ in await activity_attempts(client, document_workflow_id(run_id, good_id))
        if name == "prepare_document"
    }
    assert good_queues == {cpu_queue}
    for document_id in (poison_id, big_id, good_id):
        row = await document_row(settings, document_id)
        assert row["status"] == "completed"
        assert await chunk_rows(settings.database_url or "", document_id) == row["chunk_count"]
