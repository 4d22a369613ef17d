"""A 117-page PDF parsed as page ranges by two CPU worker processes; one is killed in the
middle of a range, and the retry resumes from its last checkpoint instead of page 1. And
where a pipeline parses a PDF fast, it is not split at all."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.database import create_pool
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.pagination import PLANS, plan_for
from docindex.spec import resolve_spec
from docindex.steps.models import PageRangeResult
from workflows.indexing_contract import RunSummary

from .helpers import first_pages, run_input, unique, wait_for_run
from .processes import FAULTY_WORKER, start_worker, stop, worker_env

BIG_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"  # 117 pages


async def pending_range_in_progress(
    client: Client, handle: WorkflowHandle, limit_s: float = 120
) -> tuple[str, int, set[str]]:
    """Wait until page ranges run on two workers at once and one of them has saved some
    pages but not all; return that worker's identity, its pages saved, and every identity
    running a range at that moment."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            description = await handle.describe()
        except Exception:
            await asyncio.sleep(0.2)
            continue
        pending_ranges = [
            p
            for p in description.raw_description.pending_activities
            if p.activity_type.name == "parse_page_range" and p.last_worker_identity
        ]
        running_on = {p.last_worker_identity for p in pending_ranges}
        if len(running_on) < 2:
            await asyncio.sleep(0.2)
            continue
        for pending in pending_ranges:
            payloads = pending.heartbeat_details.payloads
            if pending.activity_type.name != "parse_page_range" or not payloads:
                continue
            (details,) = await client.data_converter.decode(payloads)
            if not details:
                continue
            # Pages parsed since the last checkpoint are not saved yet: a retry redoes them.
            saved = details["resume_after_page"] - details["first_page"] + 1
            if 5 <= saved < details["pages_total"]:
                return pending.last_worker_identity, saved, running_on
        await asyncio.sleep(0.2)
    raise AssertionError("no page range was seen half-way")


async def test_killed_worker_loses_only_unsaved_pages(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path, tmp_path: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    cpu_queue = f"big-pdf-cpu-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        settings,
        client,
        DOCINDEX_CPU_TASK_QUEUE=cpu_queue,
        DOCINDEX_PARSE_CHECKPOINT_PAGES="5",
        DOCINDEX_CPU_WORKER_CONCURRENCY="2",
        # Parsing 5 pages takes a fraction of a second: slow each range down enough to be
        # seen half-way through the heartbeats Temporal lets through (one per 0.8 timeout).
        FAULT_DELAY_AFTER_HEARTBEAT_S="0.5",
    )
    workers = [start_worker("cpu", env, tmp_path / f"cpu-{i}.log", FAULTY_WORKER) for i in range(2)]
    try:
        blobs = BlobStore.from_settings(settings)
        # Fresh bytes: pages parsed by an earlier test would be reused, not parsed.
        data = unique((corpus / BIG_PDF).read_bytes())
        key, sha256, size = await blobs.put_upload("default", io.BytesIO(data))
        run_id, document_id = str(uuid.uuid4()), str(uuid.uuid4())
        pool = await create_pool(settings.database_url or "")
        try:
            await repository.create_run(
                pool,
                run_id,
                run_workflow_id(run_id),
                [
                    repository.NewDocument(
                        document_id=document_id,
                        filename="GeoTopo.pdf",
                        sha256=sha256,
                        size_bytes=size,
                        blob_key=key,
                    )
                ],
                spec=resolve_spec(settings),
            )
        finally:
            await pool.close()
        run = await client.start_workflow(
            "IndexingWorkflow",
            run_input(
                settings,
                run_id,
                1,
                cpu_task_queue=cpu_queue,
                split_pdf_pages=20,
                range_pages=30,
                max_parallel_ranges=4,
                heartbeat_timeout_s=4.0,
            ),
            id=run_workflow_id(run_id),
            task_queue=settings.workflow_task_queue,
            result_type=RunSummary,
        )
        child = client.get_workflow_handle(document_workflow_id(run_id, document_id))

        victim, pages_saved, running_on = await pending_range_in_progress(client, child)
        # Two worker processes were parsing ranges of this one document at the same time.
        assert len(running_on) == 2
        os.kill(int(victim.split("@")[0]), signal.SIGKILL)

        summary = await asyncio.wait_for(run.result(), timeout=300)
    finally:
        stop(workers)

    assert (summary.status, summary.completed) == ("completed", 1)
    document = (await api.get(f"/v1/documents/{document_id}")).json()
    assert document["pages"] == 117 and document["chunk_count"] > 100

    history = await child.fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    ]
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    ranges = [
        s
        for s in started
        if scheduled[s.scheduled_event_id].activity_type.name == "parse_page_range"
    ]
    # Four ranges; the killed worker's were retried and finished by the other worker.
    assert len(ranges) == 4
    retried = [s for s in ranges if s.attempt > 1]
    assert retried, "the killed worker's range must have been retried"
    assert all(s.identity != victim for s in ranges)

    results = []
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = e.activity_task_completed_event_attributes
            if scheduled[attrs.scheduled_event_id].activity_type.name == "parse_page_range":
                (result,) = await client.data_converter.decode(
                    attrs.result.payloads, [PageRangeResult]
                )
                results.append(result)
    # The retry picked up the checkpoints: those pages were not parsed again...
    assert max(r.pages_reused for r in results) >= pages_saved
    # ...and every page was parsed exactly once in the attempts that completed.
    assert sum(r.pages_parsed + r.pages_reused for r in results) == 117


async def test_a_pdf_the_native_pipeline_parses_in_seconds_is_not_split(
    default_api: httpx.AsyncClient, client: Client, corpus: Path
) -> None:
    """60 pages: the model pipeline's plan splits it into three ranges; the native
    pipeline parses it in a few seconds, where ranges would only add parse calls and a
    merge (bench figure 1), so with no split size set it is one prepare step."""
    assert plan_for("standard").split_above < 60 < plan_for("native").split_above
    assert plan_for("no-such-pipeline") == PLANS["standard"]
    data = unique(first_pages(corpus / BIG_PDF, 60))
    response = await default_api.post(
        "/v1/documents", files=[("files", ("sixty.pdf", data, "application/pdf"))]
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    run = await wait_for_run(default_api, accepted["run_id"])
    assert (run["status"], run["completed"]) == ("completed", 1)
    (document_id,) = [d["document_id"] for d in accepted["documents"]]
    document = (await default_api.get(f"/v1/documents/{document_id}")).json()
    assert document["pages"] == 60 and document["chunk_count"] > 20

    history = await client.get_workflow_handle(
        document_workflow_id(accepted["run_id"], document_id)
    ).fetch_history()
    steps = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert steps == ["prepare_document", "embed_chunks"]
