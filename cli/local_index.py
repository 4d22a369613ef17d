"""Index documents in this process: no Temporal, no HTTP, the same steps and database.

``docindex index-local PATH...`` calls the step functions the activities call
(``docindex.steps``: prepare, enrich, embed, store) with the spec a run would get, and
writes the same rows (run, documents, chunks), so what it indexes is searchable like
anything uploaded. It is the baseline the benchmark
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

import asyncpg

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.components import Components
from docindex.config import Settings
from docindex.errors import DocumentError, ProviderError
from docindex.ids import run_workflow_id
from docindex.models import DocStatus, RunState
from docindex.pagination import page_ranges
from docindex.pipeline.embedders import gpu_worker_concurrency
from docindex.pipeline.parsing import ParseLimits
from docindex.spec import AnthropicEnricher, resolve_spec
from docindex.steps.embed import EmbedSteps
from docindex.steps.enrich import EnrichSteps
from docindex.steps.models import (
    ApplyOcrInput,
    Contexts,
    DocumentRef,
    EmbedInput,
    Enriched,
    EnrichInput,
    MergeInput,
    OcrInput,
    PageRangeInput,
    Prepared,
    PrepareInput,
    StoreInput,
)
from docindex.steps.prepare import PrepareSteps
from docindex.steps.progress import Progress
from docindex.steps.store import StoreSteps

# "prepare" is parse, metadata and chunk: one step, as the CPU workers run it.
STEPS = ("upload", "prepare", "enrich", "embed", "store")


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
    """Holds what the workers hold (the parts the run's spec names); build it once, index
    often."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        started = time.perf_counter()
        self.settings = settings
        self.pool = pool
        self.blobs = BlobStore.from_settings(settings)
        self.spec = resolve_spec(settings)
        components = Components(
            settings,
            ParseLimits(
                max_bytes=settings.max_document_bytes,
                max_pages=settings.max_document_pages,
                time_budget_s=settings.parse_timeout_s,
            ),
        )
        # Built now, as the workers build them before they poll: loading is not indexing.
        self.parser = components.parser(self.spec.parser)
        self.chunker = components.chunker(self.spec.chunker)
        self.embedder = components.embedder(self.spec.embedder)
        self.prepare = PrepareSteps(self.blobs, components)
        self.enrich = EnrichSteps(self.blobs, components)
        self.embed = EmbedSteps(self.blobs, components)
        self.store = StoreSteps(self.blobs, pool, settings.prices)
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
            key, sha, size = await self.blobs.put_upload(tenant, io.BytesIO(data))
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
            self.pool,
            run_id,
            run_workflow_id(run_id),
            new,
            spec=resolve_spec(self.settings),
            tenant_id=tenant,
        )
        await repository.set_run_status(self.pool, run_id, RunState.RUNNING)
        window = asyncio.Semaphore(parallel or self.settings.max_concurrent_documents)
        slots = _Slots(
            cpu=asyncio.Semaphore(cpu_slots or self.settings.cpu_worker_concurrency),
            embed=asyncio.Semaphore(gpu_worker_concurrency(self.settings)),
        )

        async def one(doc: LocalDocument, meta: repository.NewDocument) -> None:
            async with window:
                await self._index_one(tenant, doc, meta, slots)

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
        self, tenant: str, doc: LocalDocument, meta: repository.NewDocument, slots: _Slots
    ) -> None:
        """The steps of DocumentWorkflow, called in this process, in the same order."""
        doc.status = DocStatus.RUNNING
        timer = _Timer(doc.seconds)
        spec = self.spec
        ref = DocumentRef(
            document_id=doc.document_id,
            tenant_id=tenant,
            filename=meta.filename,
            sha256=meta.sha256,
            blob_key=meta.blob_key,
        )
        try:
            async with slots.cpu:
                with timer("prepare"):
                    prepared = await self._prepare(ref)
            assert prepared.chunked is not None
            doc.pages = prepared.inspected.pages
            with timer("enrich"):
                enriched, contexts = await self._enrich(ref, prepared)
            async with slots.embed:
                with timer("embed"):
                    embedded = await self.embed.embed(
                        EmbedInput(
                            tenant_id=ref.tenant_id,
                            sha256=ref.sha256,
                            embedder=spec.embedder,
                            chunks_key=prepared.chunked.chunks_key,
                            chunk_config=prepared.chunked.chunk_config,
                            contexts_keys=[c.contexts_key for c in contexts],
                        ),
                        Progress(),
                    )
            with timer("store"):
                stored = await self.store.store(
                    StoreInput.of(doc.document_id, prepared, enriched, contexts, embedded)
                )
            doc.chunks = stored.chunk_count
            doc.status = DocStatus.COMPLETED
        except (DocumentError, ProviderError) as exc:
            # The same typed outcome the workflow records; anything else is a bug: raise it.
            doc.status, doc.error_type, doc.error = DocStatus.FAILED, exc.error_type, str(exc)
            await repository.record_outcome(
                self.pool, doc.document_id, DocStatus.FAILED, exc.error_type, str(exc)
            )

    async def _prepare(self, ref: DocumentRef) -> Prepared:
        spec = self.spec
        prepared = await self.prepare.prepare(
            PrepareInput(document=ref, parser=spec.parser, chunker=spec.chunker), Progress()
        )
        if prepared.parsed is None:
            parts: list[str] = []
            pages = prepared.inspected.pages or 0
            for first, last in page_ranges(1, pages, spec.parser.range_pages):
                done = await self.prepare.parse_page_range(
                    PageRangeInput(
                        document=ref, parser=spec.parser, first_page=first, last_page=last
                    ),
                    Progress(),
                )
                parts.extend(done.part_keys)
            prepared = await self.prepare.merge(
                MergeInput(document=ref, parser=spec.parser, chunker=spec.chunker, part_keys=parts),
                Progress(),
            )
        if not prepared.ocr_pages or prepared.parsed is None:
            return prepared
        # As the workflow does: OCR in batches, then the parse with their text.
        size, pending = spec.parser.ocr_batch_pages, prepared.ocr_pages
        keys = [
            (
                await self.prepare.ocr(
                    OcrInput(document=ref, parser=spec.parser, pages=pending[i : i + size]),
                    Progress(),
                )
            ).ocr_key
            for i in range(0, len(pending), size)
        ]
        applied = await self.prepare.apply_ocr(
            ApplyOcrInput(
                document=ref,
                parser=spec.parser,
                chunker=spec.chunker,
                parsed=prepared.parsed,
                ocr_keys=keys,
            ),
            Progress(),
        )
        return applied.model_copy(update={"inspected": prepared.inspected})

    async def _enrich(
        self, ref: DocumentRef, prepared: Prepared
    ) -> tuple[Enriched | None, list[Contexts]]:
        enricher = self.spec.enricher
        if not isinstance(enricher, AnthropicEnricher):
            return None, []
        assert prepared.parsed is not None and prepared.chunked is not None
        enriched = await self.enrich.describe(
            EnrichInput(
                tenant_id=ref.tenant_id,
                sha256=ref.sha256,
                parsed_key=prepared.parsed.parsed_key,
                enricher=enricher,
            ),
            Progress(),
        )
        contexts = [
            await self.enrich.contextualize(inp, Progress())
            for inp in enriched.context_inputs(
                ref.tenant_id, ref.sha256, enricher, prepared.chunked
            )
        ]
        return enriched, contexts


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
