"""What a document becomes is the run's pipeline spec, resolved once by the API: a worker
configured otherwise still indexes the run as the spec says."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
from temporalio.client import Client

from docindex.config import Settings
from docindex.pipeline.chunking import DocumentChunker
from docindex.pipeline.parsing import DocumentParser
from docindex.spec import PipelineSpec, resolve_spec

from .helpers import DATA, app_with, wait_for_run
from .processes import spawn_worker, stop_async, worker_env

DOCUMENT = DATA / "office/docling/word_sample.docx"


async def stored_chunks(database_url: str, document_id: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT text FROM chunks WHERE document_id = $1 ORDER BY ordinal",
            uuid.UUID(document_id),
        )
    finally:
        await conn.close()
    return [r["text"] for r in rows]


def chunk_texts(max_tokens: int) -> list[str]:
    parsed = DocumentParser("native").parse(DOCUMENT.read_bytes(), DOCUMENT.name)
    return [c.text for c in DocumentChunker(max_tokens).chunk(parsed.document)]


async def test_a_worker_with_other_settings_follows_the_runs_spec(
    workers: None, client: Client, settings: Settings, tmp_path: Path
) -> None:
    # This worker's environment asks for chunks of 32 tokens; the API's settings say 128.
    queue = f"spec-cpu-{uuid.uuid4().hex[:6]}"
    worker = await spawn_worker(
        "cpu",
        worker_env(settings, client, DOCINDEX_CPU_TASK_QUEUE=queue, DOCINDEX_CHUNK_MAX_TOKENS="32"),
        tmp_path / "cpu.log",
    )
    try:
        async with app_with(settings, client, cpu_task_queue=queue) as (_, http):
            upload = await http.post(
                "/v1/documents", files=[("files", (DOCUMENT.name, DOCUMENT.read_bytes()))]
            )
            assert upload.status_code == 202, upload.text
            run_id = upload.json()["run_id"]
            document_id = upload.json()["documents"][0]["document_id"]
            run = await wait_for_run(http, run_id)
    finally:
        await stop_async([worker])
    assert run["status"] == "completed", run

    spec = resolve_spec(settings)
    assert spec.chunker.max_tokens == settings.chunk_max_tokens == 128
    pipeline = run["pipeline"]
    assert pipeline["digest"] == spec.digest
    assert pipeline["chunker"] == {
        "kind": "hybrid",
        "max_tokens": 128,
        "tokenizer": "all-MiniLM-L6-v2",
    }
    assert PipelineSpec.model_validate({k: v for k, v in pipeline.items() if k != "digest"}) == spec

    stored = await stored_chunks(settings.database_url or "", document_id)
    assert stored == chunk_texts(128)
    # And the worker's own setting would have made something else.
    assert len(chunk_texts(32)) > len(stored)
