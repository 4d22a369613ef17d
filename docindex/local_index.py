"""Index documents in this process: no Temporal, no HTTP, the same steps and database.

``docindex index-local PATH...`` calls the plain functions the activities call (parse,
metadata, chunk, enrich, embed, store) and writes the same rows (run, documents, chunks), so
what it indexes is searchable like anything uploaded. It is the baseline the benchmark
compares the service with, and a way to debug one document without the whole stack.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from docindex import repository
from docindex.blobstore import BlobStore, parsed_key
from docindex.config import Settings
from docindex.errors import DocumentError, ProviderError
from docindex.ids import chunk_id, run_workflow_id
from docindex.models import DocStatus, RunState
from docindex.pipeline.chunking import DocumentChunker
from docindex.pipeline.embedders import Embedder, build_embedder
from docindex.pipeline.enrichment import build_enricher
from docindex.pipeline.metadata import extract_metadata
from docindex.pipeline.parsing import DocumentParser, ParseLimits
from docindex.usage import Usage, combine, cost_usd

STEPS = ("upload", "parse", "metadata", "chunk", "enrich", "embed", "store")


@dataclass
class LocalDocument:
    path: Path
    document_id: str
    status: DocStatus = DocStatus.QUEUED
    pages: int | None = None
    chunks: int = 0
    error_type: str | None = None
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class LocalRun:
    run_id: str
    tenant: str
    documents: list[LocalDocument]
    wall_s: float = 0.0
    load_s: float = 0.0

    def step_totals(self) -> dict[str, float]:
        return {s: sum(d.seconds.get(s, 0.0) for d in self.documents) for s in STEPS}


class LocalIndexer:
    """Holds what the workers hold (parser, chunker, embedder); build it once, index often."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        started = time.perf_counter()
        self.settings = settings
        self.pool = pool
        self.blobs = BlobStore.from_settings(settings)
        # Configured exactly as workers/factory.py configures the CPU and GPU workers.
        self.parser = DocumentParser(
            settings.pdf_pipeline,
            limits=ParseLimits(
                max_bytes=settings.max_document_bytes,
                max_pages=settings.max_document_pages,
                time_budget_s=settings.parse_timeout_s,
            ),
            ocr=settings.pdf_ocr,
            table_structure=settings.pdf_table_structure,
        )
        self.chunker = DocumentChunker(settings.chunk_max_tokens)
        self.embedder: Embedder = build_embedder(settings)
        self.enricher = build_enricher(settings)
        self.load_s = time.perf_counter() - started

    async def index(
        self,
        paths: Sequence[Path],
        *,
        tenant: str = "default",
        parallel: int | None = None,
        cpu_slots: int | None = None,
    ) -> LocalRun:
        """Index ``paths`` as one run with the service's limits: ``parallel`` documents in
        flight (default: a run's window, ``max_concurrent_documents``), at most
        ``cpu_slots`` of them parsing and chunking (default: a CPU worker's concurrency;
        the service holds one CPU slot for inspect, parse, metadata and chunk) and at most
        ``gpu_worker_concurrency`` embedding, so the service and this path pipeline alike."""
        started = time.perf_counter()
        run_id = str(uuid.uuid4())
        run = LocalRun(
            run_id=run_id,
            tenant=tenant,
            documents=[LocalDocument(path=p, document_id=str(uuid.uuid4())) for p in paths],
            load_s=self.load_s,
        )
        new: list[repository.NewDocument] = []
        for doc in run.documents:
            t = time.perf_counter()
            data = doc.path.read_bytes()
            key, sha, size = await self.blobs.put_upload(io.BytesIO(data))
            new.append(
                repository.NewDocument(
                    document_id=doc.document_id,
                    filename=doc.path.name,
                    sha256=sha,
                    size_bytes=size,
                    blob_key=key,
                )
            )
            doc.seconds["upload"] = time.perf_counter() - t
        await repository.create_run(
            self.pool, run_id, run_workflow_id(run_id), new, tenant_id=tenant
        )
        await repository.set_run_status(self.pool, run_id, RunState.RUNNING)
        window = asyncio.Semaphore(parallel or self.settings.max_concurrent_documents)
        slots = _Slots(
            cpu=asyncio.Semaphore(cpu_slots or self.settings.cpu_worker_concurrency),
            embed=asyncio.Semaphore(self.settings.gpu_worker_concurrency),
        )

        async def one(doc: LocalDocument, meta: repository.NewDocument) -> None:
            async with window:
                await self._index_one(doc, meta, slots)

        await asyncio.gather(*(one(d, m) for d, m in zip(run.documents, new, strict=True)))
        counts = {s: sum(d.status == s for d in run.documents) for s in DocStatus}
        done, failed = counts[DocStatus.COMPLETED], counts[DocStatus.FAILED]
        final = (
            RunState.COMPLETED
            if failed == 0
            else RunState.FAILED
            if done == 0
            else RunState.COMPLETED_WITH_ERRORS
        )
        await repository.set_run_status(
            self.pool, run_id, final, completed=done, failed=failed, cancelled=0
        )
        run.wall_s = time.perf_counter() - started
        return run

    async def _index_one(
        self, doc: LocalDocument, meta: repository.NewDocument, slots: _Slots
    ) -> None:
        doc.status = DocStatus.RUNNING
        timer = _Timer(doc.seconds)
        try:
            data = await self.blobs.get(meta.blob_key)
            async with slots.cpu:
                with timer("parse"):
                    parsed = await asyncio.to_thread(self.parser.parse, data, meta.filename)
                doc.pages = parsed.pages
                with timer("metadata"):
                    metadata = extract_metadata(parsed.document, parsed.kind.value, parsed.pipeline)
                with timer("chunk"):
                    chunks = await asyncio.to_thread(self.chunker.chunk, parsed.document)
            config = self.chunker.config_digest(
                parsed_key(meta.sha256, parsed.pipeline), self.settings.chunk_max_tokens
            )
            usages: list[Usage] = []
            contexts: list[str | None] = [None] * len(chunks)
            enrichment: dict[str, Any] = {
                "status": "skipped",
                "reason": "disabled (DOCINDEX_ENRICHER=none)",
            }
            with timer("enrich"):
                if self.enricher is not None:
                    text = await asyncio.to_thread(parsed.document.export_to_markdown)
                    summary, usage = await self.enricher.describe_document(text)
                    usages.append(usage)
                    enrichment = {"status": "enriched", "reason": None, **summary.model_dump()}
                    if self.settings.contextual_chunks:
                        for i, c in enumerate(chunks):
                            contexts[i], usage = await self.enricher.situate_chunk(text, c.text)
                            usages.append(usage)
            texts = [
                f"{x}\n\n{c.embed_text}" if x else c.embed_text
                for c, x in zip(chunks, contexts, strict=True)
            ]
            async with slots.embed:
                with timer("embed"):
                    embedded = await self.embedder.embed_documents(texts)
            usages.append(
                Usage(
                    provider=self.embedder.provider,
                    model=self.embedder.model,
                    requests=embedded.requests,
                    embedding_tokens=embedded.tokens,
                )
            )
            rows = [
                repository.ChunkRow(
                    chunk_id=chunk_id(doc.document_id, c.ordinal, config, self.embedder.model),
                    ordinal=c.ordinal,
                    text=c.text,
                    embed_text=t,
                    headings=c.headings,
                    pages=c.pages,
                    context=x,
                )
                for c, t, x in zip(chunks, texts, contexts, strict=True)
            ]
            prices = self.settings.prices
            totals = combine(usages)
            with timer("store"):
                doc.chunks = await repository.store_document(
                    self.pool,
                    doc.document_id,
                    rows,
                    embedded.vectors,
                    self.embedder.model,
                    parsed.pages,
                    {**metadata.model_dump(), "enrichment": enrichment},
                    tokens={
                        k: {**u.model_dump(), "cost_usd": cost_usd(u, prices)}
                        for k, u in totals.items()
                    },
                    cost_usd=sum(cost_usd(u, prices) for u in totals.values()),
                )
            doc.status = DocStatus.COMPLETED
        except (DocumentError, ProviderError) as exc:
            # The same typed outcome the workflow records; anything else is a bug: raise it.
            doc.status, doc.error_type, doc.error = DocStatus.FAILED, exc.error_type, str(exc)
            await repository.record_outcome(
                self.pool, doc.document_id, DocStatus.FAILED, exc.error_type, str(exc)
            )


@dataclass
class _Slots:
    """One run's limits below its window: documents parsing, documents embedding."""

    cpu: asyncio.Semaphore
    embed: asyncio.Semaphore


class _Timer:
    """``with timer("step"):`` adds the block's wall time to ``seconds["step"]``."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self._step = ""
        self._t = 0.0

    def __call__(self, step: str) -> _Timer:
        self._step = step
        return self

    def __enter__(self) -> None:
        self._t = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.seconds[self._step] = self.seconds.get(self._step, 0.0) + time.perf_counter() - self._t
