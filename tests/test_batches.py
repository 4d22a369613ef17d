"""The small documents of a big run go through their steps in batches (workflows/batch.py):
each ends as it would in a workflow of its own (rows, search, events, outcome), and what a
batch cannot index gets a workflow of its own, which fails it typed like any other."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError

from docindex import search_attributes as sa
from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.database import create_pool
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.models import Step
from docindex.runs import record_files
from workers.factory import Queue, build_workers
from workflows.batch_contract import BatchOutcome
from workflows.document_contract import DocumentProgress
from workflows.indexing_contract import RunSummary

from .conftest import run_workers
from .helpers import chunk_rows, run_input, unique
from .test_cancel import start_run
from .test_events import DOCUMENT_STEPS
from .test_generations import DOCS, search, upload, wait_for_generation

BATCHED = {"batch_documents": 4, "batch_min_run_documents": 2}
# Every document of a run of two or more side by side (none small enough for lock-step).
SIDE_BY_SIDE = {"batch_min_run_documents": 1000, "side_by_side_min_run_documents": 2}


def notes(count: int, topic: str) -> list[tuple[str, bytes]]:
    return [
        (
            f"note-{i}.md",
            unique(f"# {topic} {i}\n\nField note {i}: {topic} seen near the river bend.".encode()),
        )
        for i in range(count)
    ]


async def workflows_of(client: Client, run_id: str) -> dict[str, list[str]]:
    """Workflow ids of the run's children, by workflow type."""
    found: dict[str, list[str]] = {}
    async for wf in client.list_workflows(f"{sa.INDEXING_RUN_ID.name} = '{run_id}'"):
        found.setdefault(wf.workflow_type, []).append(wf.id)
    return found


async def document_events(settings: Settings, run_id: str) -> dict[str, list[tuple[str, str]]]:
    pool = await create_pool(settings.database_url or "")
    try:
        rows = await pool.fetch(
            "SELECT document_id, data FROM run_events WHERE run_id = $1 AND kind = 'document' "
            "ORDER BY seq",
            uuid.UUID(run_id),
        )
    finally:
        await pool.close()
    steps: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
        steps.setdefault(str(row["document_id"]), []).append((data["status"], data["step"]))
    return steps


async def test_small_documents_of_a_big_run_are_indexed_in_batches(
    client: Client, settings: Settings, workers: None, corpus: Path, default_api: httpx.AsyncClient
) -> None:
    broken = (corpus / "broken/bug1606566.pdf").read_bytes()  # 624 bytes, corrupt
    files = [*notes(9, "otters")]
    files.insert(3, ("bug1606566.pdf", broken))
    run_id, ids = await start_run(client, settings, files, **BATCHED)
    summary = await client.get_workflow_handle(
        run_workflow_id(run_id), result_type=RunSummary
    ).result()
    assert (summary.status, summary.completed, summary.failed) == ("completed_with_errors", 9, 1)

    # Ten small documents, four to a batch: three batches. The broken one was handed back
    # and failed typed in a workflow of its own, which operators find by its status.
    children = await workflows_of(client, run_id)
    assert len(children["DocumentBatchWorkflow"]) == 3
    assert len(children["DocumentWorkflow"]) == 1
    failed = [
        wf
        async for wf in client.list_workflows(
            f"{sa.INDEXING_RUN_ID.name} = '{run_id}' AND {sa.DOC_STATUS.name} = 'failed'"
        )
    ]
    assert [wf.workflow_type for wf in failed] == ["DocumentWorkflow"]
    assert failed[0].typed_search_attributes.get(sa.ERROR_TYPE) == "CorruptDocument"

    # Each note is stored and searchable, with the same events as a document of its own.
    run = (await default_api.get(f"/v1/runs/{run_id}")).json()
    outcome = {d["filename"]: (d["status"], d["error_type"]) for d in run["documents"]}
    assert outcome.pop("bug1606566.pdf") == ("failed", "CorruptDocument")
    assert set(outcome.values()) == {("completed", None)}
    events = await document_events(settings, run_id)
    for doc in ids[:3] + ids[4:]:
        assert await chunk_rows(settings.database_url or "", doc) >= 1
        assert events[doc] == DOCUMENT_STEPS, events[doc]
    hits = (
        await default_api.post(
            "/v1/search", json={"query": "otters seen near the river bend", "top_k": 20}
        )
    ).json()["results"]
    assert set(ids[:3] + ids[4:]) <= {h["document_id"] for h in hits}


async def test_a_run_below_the_batch_threshold_keeps_a_workflow_per_document(
    client: Client, settings: Settings, workers: None
) -> None:
    run_id, _ = await start_run(
        client, settings, notes(3, "herons"), batch_documents=4, batch_min_run_documents=4
    )
    await client.get_workflow_handle(run_workflow_id(run_id)).result()
    children = await workflows_of(client, run_id)
    assert len(children["DocumentWorkflow"]) == 3 and "DocumentBatchWorkflow" not in children


async def test_the_small_documents_around_a_big_one_fill_one_batch(
    client: Client, settings: Settings, workers: None
) -> None:
    files = notes(4, "ospreys")
    files.insert(2, ("long.md", unique(b"# Long\n\n" + b"Ospreys dive feet first. " * 40)))
    run_id, ids = await start_run(client, settings, files, batch_document_bytes=400, **BATCHED)
    summary = await client.get_workflow_handle(
        run_workflow_id(run_id), result_type=RunSummary
    ).result()
    assert summary.completed == 5
    children = await workflows_of(client, run_id)
    assert children["DocumentWorkflow"] == [document_workflow_id(run_id, ids[2])]
    [batch] = children["DocumentBatchWorkflow"]
    outcome = await client.get_workflow_handle(batch, result_type=BatchOutcome).result()
    assert sorted(outcome.completed) == sorted(ids[:2] + ids[3:])


async def test_documents_side_by_side_go_through_their_own_steps_in_one_workflow(
    client: Client, settings: Settings, workers: None, corpus: Path, default_api: httpx.AsyncClient
) -> None:
    """Documents of any size in a run of many: one workflow for several, each through its
    own steps (OCR included) as a workflow of its own would take it; what it cannot index
    is handed back and fails typed in a workflow of its own."""
    from .test_ocr import MULTI_PAGE, scanned_crazyones

    files = [
        ("scan.pdf", unique(scanned_crazyones())),
        ("multi_page.pdf", MULTI_PAGE.read_bytes()),
        ("bug1606566.pdf", (corpus / "broken/bug1606566.pdf").read_bytes()),
        *notes(1, "kingfishers"),
    ]
    run_id, ids = await start_run(
        client,
        settings,
        files,
        batch_documents=4,
        side_by_side_parallel=1,
        max_concurrent_documents=1,
        **SIDE_BY_SIDE,
    )
    summary = await client.get_workflow_handle(
        run_workflow_id(run_id), result_type=RunSummary
    ).result()
    assert (summary.completed, summary.failed) == (3, 1)
    children = await workflows_of(client, run_id)
    assert children["DocumentWorkflow"] == [document_workflow_id(run_id, ids[2])]
    [batch] = children["DocumentBatchWorkflow"]
    outcome = await client.get_workflow_handle(batch, result_type=BatchOutcome).result()
    assert sorted(outcome.completed) == sorted([ids[0], ids[1], ids[3]])
    assert list(outcome.handed_back) == [ids[2]]
    # One document at a time (side_by_side_parallel=1): never two activities open at once.
    assert await most_activities_open(client, batch) == 1

    # The scan was OCRed in the batch, with the events a workflow of its own records.
    events = await document_events(settings, run_id)
    assert events[ids[0]] == [
        ("running", "parse"),
        ("running", "ocr"),
        *DOCUMENT_STEPS[1:],
    ], events[ids[0]]
    assert events[ids[1]] == DOCUMENT_STEPS
    for doc in (ids[0], ids[1], ids[3]):
        assert await chunk_rows(settings.database_url or "", doc) >= 1
    hits = (
        await default_api.post(
            "/v1/search", json={"query": "the crazy ones, the misfits", "top_k": 50}
        )
    ).json()["results"]
    assert ids[0] in {h["document_id"] for h in hits}


async def test_a_document_handed_back_starts_on_its_own_while_its_batch_goes_on(
    client: Client, settings: Settings, workers: None, corpus: Path
) -> None:
    """A batch tells its run of a document it hands back as it does: with room in the
    window, the run starts that document's own workflow (which fails it typed) while the
    batch still indexes its next document, a scan to OCR, and takes it once, though the
    batch's outcome names it too."""
    from .test_ocr import scanned_crazyones

    files = [
        ("bug1606566.pdf", (corpus / "broken/bug1606566.pdf").read_bytes()),
        ("scan.pdf", unique(scanned_crazyones())),
        *notes(1, "dippers"),
    ]
    # A window of 3, batches indexing one at a time: the first two in one batch, the note
    # alone, and a slot left for the broken file.
    run_id, ids = await start_run(
        client,
        settings,
        files,
        batch_documents=2,
        side_by_side_parallel=1,
        max_concurrent_documents=3,
        **SIDE_BY_SIDE,
    )
    run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
    summary = await run.result()
    assert (summary.completed, summary.failed) == (2, 1)
    children = await workflows_of(client, run_id)
    [batch] = children["DocumentBatchWorkflow"]
    assert sorted(children["DocumentWorkflow"]) == sorted(
        document_workflow_id(run_id, d) for d in (ids[0], ids[2])
    )
    outcome = await client.get_workflow_handle(batch, result_type=BatchOutcome).result()
    assert (outcome.completed, list(outcome.handed_back)) == ([ids[1]], [ids[0]])
    assert outcome.handed_back[ids[0]].error_type == "CorruptDocument"

    # In the run's history the broken file's workflow starts before the batch ends.
    broken_wf = document_workflow_id(run_id, ids[0])
    started = batch_closed = None
    for e in (await run.fetch_history()).events:
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            attrs = e.start_child_workflow_execution_initiated_event_attributes
            if attrs.workflow_id == broken_wf:
                started = e.event_id
        elif e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            if (
                e.child_workflow_execution_completed_event_attributes.workflow_execution.workflow_id
                == batch
            ):
                batch_closed = e.event_id
    assert started is not None and batch_closed is not None and started < batch_closed
    broken = await client.get_workflow_handle(broken_wf).describe()
    assert broken.status == WorkflowExecutionStatus.FAILED
    assert broken.typed_search_attributes.get(sa.ERROR_TYPE) == "CorruptDocument"


async def test_a_side_by_side_batch_takes_as_many_slots_of_the_window_as_it_indexes_at_once(
    client: Client, settings: Settings, workers: None
) -> None:
    """A window of 2 documents and batches indexing 2 at once: one batch at a time, so the
    documents in flight never exceed the window."""
    run_id, _ = await start_run(
        client,
        settings,
        notes(6, "grebes"),
        batch_documents=3,
        side_by_side_parallel=2,
        max_concurrent_documents=2,
        **SIDE_BY_SIDE,
    )
    summary = await client.get_workflow_handle(
        run_workflow_id(run_id), result_type=RunSummary
    ).result()
    assert summary.completed == 6
    batches = []
    async for wf in client.list_workflows(
        f"{sa.INDEXING_RUN_ID.name} = '{run_id}' AND WorkflowType = 'DocumentBatchWorkflow'"
    ):
        batches.append(await client.get_workflow_handle(wf.id).describe())
    assert len(batches) == 2
    first, second = sorted(batches, key=lambda d: d.start_time)
    assert first.close_time is not None and second.start_time >= first.close_time
    for batch in batches:
        assert await most_activities_open(client, batch.id) == 2


async def most_activities_open(client: Client, workflow_id: str) -> int:
    """The most activities scheduled and not yet closed at any point of a history."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    open_now = most = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            open_now += 1
            most = max(most, open_now)
        elif event.event_type in (
            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
            EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
            EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
        ):
            open_now -= 1
    return most


async def wait_for_step(client: Client, workflow_id: str, step: Step) -> list[DocumentProgress]:
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            progress = await handle.query("status", result_type=list[DocumentProgress])
            if progress and all(p.step is step for p in progress):
                return progress
        except Exception:
            pass
        await asyncio.sleep(0.2)
    pytest.fail(f"{workflow_id} never reached {step}")


async def batch_in_embed_step(
    client: Client, settings: Settings, topic: str, **options: object
) -> tuple[str, list[str], str, str]:
    """A batched run whose embedding waits on a queue no worker serves yet, caught there:
    (run id, document ids, the batch's workflow id, that queue)."""
    gpu_queue = f"test-gpu-later-{uuid.uuid4().hex[:6]}"
    run_id, ids = await start_run(
        client, settings, notes(3, topic), gpu_task_queue=gpu_queue, **BATCHED, **options
    )
    deadline = time.monotonic() + 60
    while not (batches := (await workflows_of(client, run_id)).get("DocumentBatchWorkflow")):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    await wait_for_step(client, batches[0], Step.EMBED)
    return run_id, ids, batches[0], gpu_queue


async def test_a_document_cancelled_in_a_batch_ends_cancelled_and_the_rest_completes(
    client: Client, settings: Settings, workers: None, default_api: httpx.AsyncClient
) -> None:
    run_id, ids, batch, gpu_queue = await batch_in_embed_step(client, settings, "kingfishers")

    # The API shows each document's step, asked of the batch.
    run = (await default_api.get(f"/v1/runs/{run_id}")).json()
    assert {(d["status"], d["step"]) for d in run["documents"]} == {("running", "embed")}
    detail = (await default_api.get(f"/v1/documents/{ids[1]}")).json()
    assert (detail["status"], detail["step"]) == ("running", "embed")

    cancelled = await default_api.post(f"/v1/documents/{ids[1]}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    late = settings.model_copy(update={"gpu_task_queue": gpu_queue})
    async with build_workers(Queue.GPU, client, late, settings.database_url or "") as gpu:
        async with run_workers(gpu):
            summary = await client.get_workflow_handle(
                run_workflow_id(run_id), result_type=RunSummary
            ).result()
    assert (summary.completed, summary.cancelled, summary.failed) == (2, 1, 0)
    outcome = await client.get_workflow_handle(batch, result_type=BatchOutcome).result()
    assert outcome.cancelled == [ids[1]] and sorted(outcome.completed) == sorted([ids[0], ids[2]])
    assert await chunk_rows(settings.database_url or "", ids[1]) == 0
    run = (await default_api.get(f"/v1/runs/{run_id}")).json()
    by_id = {d["document_id"]: d["status"] for d in run["documents"]}
    assert by_id == {ids[0]: "completed", ids[1]: "cancelled", ids[2]: "completed"}


async def test_a_document_cancelled_while_it_waits_its_turn_side_by_side_never_starts(
    client: Client, settings: Settings, workers: None, default_api: httpx.AsyncClient
) -> None:
    gpu_queue = f"test-gpu-later-{uuid.uuid4().hex[:6]}"
    run_id, ids = await start_run(
        client,
        settings,
        notes(3, "terns"),
        gpu_task_queue=gpu_queue,
        batch_documents=3,
        side_by_side_parallel=1,
        max_concurrent_documents=1,
        **SIDE_BY_SIDE,
    )
    # The first document waits for its embedding (no worker serves that queue yet), the
    # others for their turn in the batch.
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the batch never reached the first embed"
        batches = (await workflows_of(client, run_id)).get("DocumentBatchWorkflow")
        if batches:
            handle = client.get_workflow_handle(batches[0])
            progress = {
                p.document_id: p
                for p in await handle.query("status", result_type=list[DocumentProgress])
            }
            if progress[ids[0]].step is Step.EMBED:
                break
        await asyncio.sleep(0.2)
    assert (progress[ids[1]].status, progress[ids[1]].step) == ("queued", None)

    cancelled = await default_api.post(f"/v1/documents/{ids[1]}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    late = settings.model_copy(update={"gpu_task_queue": gpu_queue})
    async with build_workers(Queue.GPU, client, late, settings.database_url or "") as gpu:
        async with run_workers(gpu):
            summary = await client.get_workflow_handle(
                run_workflow_id(run_id), result_type=RunSummary
            ).result()
    assert (summary.completed, summary.cancelled) == (2, 1)
    outcome = await client.get_workflow_handle(batches[0], result_type=BatchOutcome).result()
    assert outcome.cancelled == [ids[1]]
    assert sorted(outcome.completed) == sorted([ids[0], ids[2]])
    assert await chunk_rows(settings.database_url or "", ids[1]) == 0
    events = await document_events(settings, run_id)
    assert ("running", "parse") not in events.get(ids[1], [])


async def test_cancelling_a_run_cancels_the_documents_its_batch_had_not_stored(
    client: Client, settings: Settings, workers: None, default_api: httpx.AsyncClient
) -> None:
    run_id, ids, batch, _ = await batch_in_embed_step(client, settings, "grebes")
    assert (await default_api.post(f"/v1/runs/{run_id}/cancel")).status_code == 202
    with pytest.raises(WorkflowFailureError):
        await client.get_workflow_handle(run_workflow_id(run_id)).result()
    described = await client.get_workflow_handle(batch).describe()
    assert described.status == WorkflowExecutionStatus.CANCELED
    run = (await default_api.get(f"/v1/runs/{run_id}")).json()
    assert run["status"] == "cancelled"
    assert {(d["status"], d["error_type"]) for d in run["documents"]} == {
        ("cancelled", "Cancelled")
    }
    for doc in ids:
        assert await chunk_rows(settings.database_url or "", doc) == 0


async def test_a_runs_deadline_stops_its_batch_and_says_so_in_each_outcome(
    client: Client, settings: Settings, workers: None, default_api: httpx.AsyncClient
) -> None:
    run_id, _, _, _ = await batch_in_embed_step(client, settings, "dippers", run_deadline_s=10)
    summary = await client.get_workflow_handle(
        run_workflow_id(run_id), result_type=RunSummary
    ).result()
    assert (summary.completed, summary.cancelled) == (0, 3)
    run = (await default_api.get(f"/v1/runs/{run_id}")).json()
    assert {(d["status"], d["error_type"]) for d in run["documents"]} == {
        ("cancelled", "DeadlineExceeded")
    }


async def test_a_batch_indexes_its_documents_into_a_generation_being_built_too(
    client: Client, settings: Settings, workers: None, api: httpx.AsyncClient
) -> None:
    tenant = api.tenant  # type: ignore[attr-defined]
    await upload(api, {"pumps.md": DOCS["pumps.md"]})
    created = await api.post(
        "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 24}}
    )
    assert created.status_code == 202, created.text
    new_id = created.json()["generation_id"]
    assert (await wait_for_generation(api, new_id))["status"] == "ready"

    pool = await create_pool(settings.database_url or "")
    try:
        run_id, ids = await record_files(
            pool, BlobStore.from_settings(settings), notes(3, "lapwings"), tenant
        )
    finally:
        await pool.close()
    await client.execute_workflow(
        "IndexingWorkflow",
        run_input(settings, run_id, len(ids), tenant_id=tenant, **BATCHED),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
    )
    assert "DocumentBatchWorkflow" in await workflows_of(client, run_id)
    # Served by the active generation, and already in the one built beside it.
    for generation in (None, new_id):
        extra = {"generation_id": generation} if generation else {}
        hits = (await search(api, "lapwings seen near the river bend", **extra))["results"]
        assert set(ids) <= {h["document_id"] for h in hits}, generation
