"""Workers share nothing but Temporal, Postgres and the blob store: two CPU workers and a GPU
worker as separate processes index one run together, and each serves its metrics."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import httpx
import psutil
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docindex.config import Settings
from docindex.ids import document_workflow_id
from workflows.indexing_contract import RunSummary

from .helpers import free_port, unique
from .processes import start_worker, stop, worker_env
from .test_cancel import start_run

DOCS = [
    "pdf/docling/multi_page.pdf",
    "pdf/docling/code_and_formula.pdf",
    "pdf/pypdf/crazyones.pdf",
    "office/docling/word_sample.docx",
    "office/docling/powerpoint_sample.pptx",
    "office/docling/xlsx_06_edge_cases_.xlsx",
]


async def scrape(port: int, limit_s: float = 60) -> str:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient() as http:
        while True:
            try:
                return (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


async def test_workers_in_separate_processes_share_one_run(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path, tmp_path: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    suffix = uuid.uuid4().hex[:6]
    cpu_queue, gpu_queue = f"apart-cpu-{suffix}", f"apart-gpu-{suffix}"
    ports = [free_port() for _ in range(3)]
    base = {
        "DOCINDEX_CPU_TASK_QUEUE": cpu_queue,
        "DOCINDEX_GPU_TASK_QUEUE": gpu_queue,
        "DOCINDEX_CPU_WORKER_CONCURRENCY": "1",
    }
    workers = [
        start_worker(
            "cpu",
            worker_env(settings, client, **base, DOCINDEX_METRICS_PORT=str(ports[0])),
            tmp_path / "c1",
        ),
        start_worker(
            "cpu",
            worker_env(settings, client, **base, DOCINDEX_METRICS_PORT=str(ports[1])),
            tmp_path / "c2",
        ),
        start_worker(
            "gpu",
            worker_env(settings, client, **base, DOCINDEX_METRICS_PORT=str(ports[2])),
            tmp_path / "g",
        ),
    ]
    try:
        # Fresh bytes for the PDFs: parses reused from earlier tests would count no pages.
        files = [
            (
                Path(d).name,
                unique((corpus / d).read_bytes())
                if d.endswith(".pdf")
                else (corpus / d).read_bytes(),
            )
            for d in DOCS
        ]
        run_id, document_ids = await start_run(
            client,
            settings,
            files,
            cpu_task_queue=cpu_queue,
            gpu_task_queue=gpu_queue,
            max_concurrent_documents=6,
        )
        handle = client.get_workflow_handle(f"index-run/{run_id}", result_type=RunSummary)
        summary = await asyncio.wait_for(handle.result(), timeout=240)
        assert (summary.status, summary.completed) == ("completed", len(DOCS))

        identities: dict[str, set[str]] = {}
        for document_id in document_ids:
            history = await client.get_workflow_handle(
                document_workflow_id(run_id, document_id)
            ).fetch_history()
            scheduled = {
                e.event_id: e.activity_task_scheduled_event_attributes.task_queue.name
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            }
            for e in history.events:
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                    attrs = e.activity_task_started_event_attributes
                    queue = scheduled[attrs.scheduled_event_id]
                    identities.setdefault(queue, set()).add(attrs.identity)
        # Both CPU processes worked on this run; the GPU process did the embedding; none of
        # them is this test process.
        assert len(identities[cpu_queue]) == 2
        assert len(identities[gpu_queue]) == 1
        pids = {str(w.pid) for w in workers}
        assert {i.split("@")[0] for q in (cpu_queue, gpu_queue) for i in identities[q]} <= pids

        cpu_metrics = [await scrape(port) for port in ports[:2]]
        gpu_metrics = await scrape(ports[2])

        # Parsing and embedding yield the cores to the API and the orchestration (nice 10
        # more than whoever started them), every thread of the workers and of their parse
        # processes.
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)
        parse_processes = [c.pid for w in workers[:2] for c in psutil.Process(w.pid).children()]
        assert parse_processes
        for pid in [w.pid for w in workers] + parse_processes:
            for tid in (t.id for t in psutil.Process(pid).threads()):
                assert os.getpriority(os.PRIO_PROCESS, tid) == expected, (pid, tid)
    finally:
        stop(workers)

    pages = sum(metric(m, "docindex_pages_parsed") for m in cpu_metrics)
    assert pages >= 5 + 2 + 1  # every PDF page, counted by whichever worker parsed it
    assert all("temporal_activity_execution_latency" in m for m in cpu_metrics)
    # crazyones.pdf's text layer is unreadable: its page is OCRed, in a step of its own.
    assert sum(metric(m, "docindex_ocr_pages") for m in cpu_metrics) >= 1
    ocr_pages = [
        line
        for m in cpu_metrics
        for line in m.splitlines()
        if line.startswith("docindex_pdf_pages") and 'page_class="ocr"' in line
    ]
    assert ocr_pages and sum(float(line.rsplit(" ", 1)[1]) for line in ocr_pages) >= 1
    assert metric(gpu_metrics, "docindex_chunks_embedded") >= len(DOCS)
    assert metric(gpu_metrics, "docindex_provider_tokens{") > 0

    status = (await api.get(f"/v1/runs/{run_id}")).json()
    assert status["completed"] == len(DOCS)
    api_metrics = (await api.get("/metrics")).text
    # Counted under the route template, not the raw path with its id.
    assert 'route="/v1/runs/{run_id}"' in api_metrics
    assert metric(api_metrics, "docindex_api_requests_total") > 0
