"""Upload through the HTTP API → Temporal workflows → Postgres, then search."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Replayer

from docindex import repository
from docindex.config import Settings
from docindex.database import create_pool
from workflows.document import DocumentWorkflow
from workflows.indexing import IndexingWorkflow

from .helpers import wait_for_run

PDF = "pdf/docling/multi_page.pdf"
DOCX = "office/docling/word_sample.docx"


async def test_upload_pdf_and_docx_becomes_searchable(
    api: httpx.AsyncClient, corpus: Path, client: Client, settings: Settings
) -> None:
    files = [
        ("files", ("multi_page.pdf", (corpus / PDF).read_bytes(), "application/pdf")),
        ("files", ("word_sample.docx", (corpus / DOCX).read_bytes(), "application/octet-stream")),
    ]
    response = await api.post("/v1/documents", files=files)
    assert response.status_code == 202, response.text
    accepted = response.json()
    run_id = accepted["run_id"]
    assert accepted["status_url"] == f"/v1/runs/{run_id}"
    assert [d["filename"] for d in accepted["documents"]] == ["multi_page.pdf", "word_sample.docx"]
    assert all(len(d["sha256"]) == 64 for d in accepted["documents"])

    seen: list[dict] = []
    run = await wait_for_run(api, run_id, seen=seen)
    assert run["status"] == "completed", run
    # While it ran, status came from the workflow's query, with each document's step.
    live = [s for s in seen if s["source"] == "workflow"]
    assert live and any(d["step"] for s in live for d in s["documents"])
    assert run["source"] == "database" and run["finished_at"]
    assert run["completed"] == 2
    by_name = {d["filename"]: d for d in run["documents"]}
    assert by_name["multi_page.pdf"]["pages"] == 5
    assert all(d["status"] == "completed" and d["chunk_count"] > 0 for d in run["documents"])

    # Rows and vectors really are in Postgres.
    pdf_id = by_name["multi_page.pdf"]["document_id"]
    conn = await asyncpg.connect(settings.database_url)
    try:
        count, dims = await conn.fetchrow(
            "SELECT count(*), min(vector_dims(embedding)) FROM chunks WHERE document_id = $1",
            uuid.UUID(pdf_id),
        )
    finally:
        await conn.close()
    assert count == by_name["multi_page.pdf"]["chunk_count"] and dims == 384

    # A phrase from the PDF finds the PDF first.
    hits = (
        await api.post(
            "/v1/search",
            json={
                "query": "the evolution of the word processor and typewriters",
                "top_k": 5,
            },
        )
    ).json()["results"]
    assert hits and hits[0]["document_id"] == pdf_id
    assert hits[0]["filename"] == "multi_page.pdf" and hits[0]["pages"]
    assert hits == sorted(hits, key=lambda h: -h["score"])

    # Search uses the HNSW index of the model's dimension.
    pool = await create_pool(settings.database_url or "")
    try:
        plan = await repository.explain_search(pool, 384, hits and "all-MiniLM-L6-v2")
    finally:
        await pool.close()
    assert "Index Scan using chunks_hnsw_all_minilm_l6_v2_384" in plan, plan

    doc = (await api.get(f"/v1/documents/{pdf_id}")).json()
    assert doc["status"] == "completed" and doc["pages"] == 5
    assert doc["metadata"]["pipeline"] == "native"

    # The history shows one child per document and activities on both CPU and GPU queues.
    run_handle = client.get_workflow_handle(f"index-run/{run_id}")
    run_history = await run_handle.fetch_history()
    children = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in run_history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert sorted(children) == sorted(
        f"index-doc/{run_id}/{d['document_id']}" for d in accepted["documents"]
    )
    histories = [run_history]
    queues: set[str] = set()
    for child_id in children:
        history = await client.get_workflow_handle(child_id).fetch_history()
        histories.append(history)
        queues |= {
            e.activity_task_scheduled_event_attributes.task_queue.name
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        }
    assert {settings.cpu_task_queue, settings.gpu_task_queue} <= queues

    # Every recorded history replays without non-determinism.
    replayer = Replayer(
        workflows=[IndexingWorkflow, DocumentWorkflow],
        data_converter=client.data_converter,
    )
    for history in histories:
        await replayer.replay_workflow(history)


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    ready = await api.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert {name for name, c in body["checks"].items() if c["ok"]} == {
        "temporal",
        "postgres",
        "blob_store",
    }
