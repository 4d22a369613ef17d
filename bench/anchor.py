"""The anchor of figure 1 (issue #19 item 1): the best plain script a user could write for
this machine, with the service's own step functions, spec and rows.

``docindex index-local`` runs parse threads, embedding and its event loop in one process,
under one GIL, and leaves core-seconds idle: a poor anchor. Here:

- ``Anchor.run(paths, tenant, processes=P, batch=B)``: inspect, parse, describe and chunk
  (``PrepareSteps``: prepare, page ranges, merge, OCR) in ``P`` worker processes of a
  ``ProcessPoolExecutor``, fed every document at once (FIFO, as fast as they go; a big PDF's
  page ranges join the queue as soon as it is inspected, so idle processes take them);
  embedding in the main process (``EmbedSteps.embed`` of every document as it is prepared:
  the embedder's batcher puts whatever is queued, across documents, into one forward pass
  of up to ``B`` texts); ``StoreSteps.store`` as each document's vectors are saved.
- ``Anchor.naive(paths, tenant)``: the plain loop, each file in turn: prepare, embed, store.

No cage: the caged functions (inspect, parse, OCR) run in the process that calls the step
(``InProcess``), as a script calling Docling would. The spec is ``resolve_spec`` of the same
settings, the run and its documents are recorded as ``index-local`` records them, and the
store step writes the same rows, so ``outcomes`` can compare both sides per file.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.cage import Cage, CageLimits
from docindex.components import Components
from docindex.config import Settings
from docindex.errors import DocumentError, ProviderError
from docindex.ids import run_workflow_id
from docindex.models import DocStatus, RunState
from docindex.pagination import page_ranges
from docindex.pipeline.embedders.local import default_micro_batch
from docindex.pipeline.parsing import ParseLimits
from docindex.spec import LocalEmbedder as LocalEmbedderSpec
from docindex.spec import NoEnricher, PipelineSpec, resolve_spec
from docindex.steps import caged
from docindex.steps.embed import EmbedSteps
from docindex.steps.models import (
    ApplyOcrInput,
    DocumentRef,
    EmbedInput,
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

T = TypeVar("T")
Call = Callable[[str, Any], Awaitable[Any]]


class InProcess(Cage):
    """No cage: a caged function runs right here, in the calling process."""

    async def call(  # type: ignore[override]
        self,
        func: Callable[..., T],
        *args: Any,
        on_progress: Any = None,
        on_alive: Any = None,
        time_budget_s: float | None = None,
        stall_s: float | None = None,
        **kwargs: Any,
    ) -> T:
        return func(*args, report=_ignore, **kwargs)


def _ignore(_: dict[str, Any]) -> None:
    pass


def limits_of(settings: Settings) -> ParseLimits:
    """What a CPU worker (and ``index-local``) gives one document."""
    return ParseLimits(
        max_bytes=settings.max_document_bytes,
        max_pages=settings.max_document_pages,
        time_budget_s=settings.parse_timeout_s,
    )


def prepare_steps(settings: Settings, sharing: int = 1) -> PrepareSteps:
    """The CPU steps, uncaged, with the parser and chunker of the settings' spec built, in
    one of ``sharing`` busy processes: OCR takes its share of the cores
    (``threads_per_process``), as in the service's parse processes."""
    spec = resolve_spec(settings)
    components = Components(settings, limits_of(settings))
    caged.warm(spec.parser, limits_of(settings), spec.chunker, report=_ignore)
    cage = InProcess(CageLimits(processes=sharing))
    return PrepareSteps(BlobStore.from_settings(settings), components, cage)


# --- the worker processes -------------------------------------------------------------

_steps: PrepareSteps | None = None
_loop: asyncio.AbstractEventLoop | None = None


def _init(settings: Settings, processes: int) -> None:
    global _steps, _loop
    # The main process embeds while these parse: OCR's threads spin when the cores are
    # oversubscribed, so each takes a share of the cores among processes + 1.
    _steps = prepare_steps(settings, sharing=processes + 1)
    _loop = asyncio.new_event_loop()


def _step(name: str, inp: Any) -> Any:
    """One CPU step (``PrepareSteps.<name>``) in this worker process."""
    assert _steps is not None and _loop is not None
    return _loop.run_until_complete(getattr(_steps, name)(inp, Progress()))


def _started(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


# --- one document's CPU steps, as DocumentWorkflow orders them ---------------------------


async def prepare(spec: PipelineSpec, ref: DocumentRef, call: Call) -> Prepared:
    """Inspect, parse, describe and chunk ``ref`` through ``call(step, input)``: a big PDF's
    page ranges all at once (each may go to another process), then their merge; pages with
    no text layer OCRed in batches, then applied (as ``LocalIndexer._prepare`` does)."""
    parser, chunker = spec.parser, spec.chunker
    prepared: Prepared = await call(
        "prepare", PrepareInput(document=ref, parser=parser, chunker=chunker)
    )
    if prepared.parsed is None:
        pages = prepared.inspected.pages or 0
        done = await asyncio.gather(
            *(
                call(
                    "parse_page_range",
                    PageRangeInput(document=ref, parser=parser, first_page=a, last_page=b),
                )
                for a, b in page_ranges(1, pages, parser.range_pages)
            )
        )
        parts = [key for d in done for key in d.part_keys]
        prepared = await call(
            "merge", MergeInput(document=ref, parser=parser, chunker=chunker, part_keys=parts)
        )
    if not prepared.ocr_pages or prepared.parsed is None:
        return prepared
    size, pending = parser.ocr_batch_pages, prepared.ocr_pages
    results = await asyncio.gather(
        *(
            call("ocr", OcrInput(document=ref, parser=parser, pages=pending[i : i + size]))
            for i in range(0, len(pending), size)
        )
    )
    applied: Prepared = await call(
        "apply_ocr",
        ApplyOcrInput(
            document=ref,
            parser=parser,
            chunker=chunker,
            parsed=prepared.parsed,
            ocr_keys=[r.ocr_key for r in results],
        ),
    )
    return applied.model_copy(update={"inspected": prepared.inspected})


# --- the anchor ---------------------------------------------------------------------------


@dataclass
class AnchorRun:
    run_id: str
    tenant: str
    setting: str
    wall_s: float = 0.0
    completed: int = 0
    failed: int = 0
    # CPU seconds of the worker processes over the pass (the main process is the caller's).
    workers_cpu_s: float = 0.0
    step_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Outcome:
    """What a pass made of one file, read back from Postgres."""

    filename: str
    status: str
    chunks: int
    error_type: str | None = None


class Anchor:
    """Build once (models loaded, worker processes started and warm), then ``run`` and
    ``naive`` as often as needed; ``close`` stops the processes."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.spec = resolve_spec(settings)
        if not isinstance(self.spec.enricher, NoEnricher):
            raise ValueError("the anchor runs without enrichment (the service's default)")
        self.blobs = BlobStore.from_settings(settings)
        self.store = StoreSteps(self.blobs, pool, settings.prices)
        self._embed: dict[int, EmbedSteps] = {}
        self._pools: dict[int, ProcessPoolExecutor] = {}
        self._naive: PrepareSteps | None = None

    # ------------------------------------------------------------------ set-up

    def embed_steps(self, batch: int) -> EmbedSteps:
        """The embed step with a model whose batcher coalesces up to ``batch`` texts (one
        model instance per batch size, loaded here, before any clock)."""
        if batch not in self._embed:
            settings = self.settings.model_copy(update={"embed_micro_batch": batch})
            components = Components(settings)
            embedder = components.embedder(self.spec.embedder)
            encode = getattr(embedder, "encode", None)
            if encode is not None:  # a local model: its first forward pass, off the clock
                encode(["warm up"])
            self._embed[batch] = EmbedSteps(self.blobs, components)
        return self._embed[batch]

    def torch_threads(self, threads: int | None) -> int:
        """Set this process's torch threads for the next pass (None: the service's default
        for a local model on CPU, ``DOCINDEX_EMBED_CPU_THREADS`` or one fewer than the
        cores); the number set (0 when the embedder is not a local torch model)."""
        if not isinstance(self.spec.embedder, LocalEmbedderSpec):
            return 0
        from docindex.pipeline.embedders.local import set_cpu_threads

        return set_cpu_threads(threads or self.settings.embed_cpu_threads)

    async def processes(self, n: int) -> ProcessPoolExecutor:
        """``n`` worker processes, each with Docling and the chunker loaded."""
        if n not in self._pools:
            executor = ProcessPoolExecutor(
                max_workers=n,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(self.settings, n),
            )
            loop = asyncio.get_running_loop()
            # A spawn pool starts a process per submit while none is idle: n slow tasks
            # start all n (each loads Docling in its initializer first).
            await asyncio.gather(*(loop.run_in_executor(executor, _started, 1.0) for _ in range(n)))
            self._pools[n] = executor
        return self._pools[n]

    def worker_pids(self, n: int) -> list[int]:
        executor = self._pools.get(n)
        # The pool's own table of its processes (no public API lists them).
        return list(getattr(executor, "_processes", {}) or {}) if executor else []

    def close(self, keep: int | None = None) -> None:
        """Stop the worker processes (all but the pool of ``keep`` processes)."""
        for n in [n for n in self._pools if n != keep]:
            self._pools.pop(n).shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ passes

    async def run(
        self,
        paths: Sequence[Path],
        tenant: str,
        *,
        processes: int,
        batch: int,
        threads: int | None = None,
    ) -> AnchorRun:
        """Every document at once: CPU steps in ``processes`` worker processes, embedding
        across documents in batches of up to ``batch`` texts here, with ``threads`` torch
        threads (None: the service's default), stores as they come."""
        executor = await self.processes(processes)
        embed = self.embed_steps(batch)
        threads = self.torch_threads(threads)
        loop = asyncio.get_running_loop()

        async def call(name: str, inp: Any) -> Any:
            return await loop.run_in_executor(executor, _step, name, inp)

        pids = self.worker_pids(processes)
        before = _cpu(pids)
        setting = f"{processes} proc, batch {batch}, {threads} torch threads"
        out = AnchorRun(run_id="", tenant=tenant, setting=setting)
        started = time.perf_counter()
        run_id, refs = await self._begin(paths, tenant)
        done = await asyncio.gather(*(self._document(ref, call, embed, out) for ref in refs))
        await self._end(run_id, done, out)
        out.wall_s = time.perf_counter() - started
        out.workers_cpu_s = round(_cpu(pids) - before, 2)
        return out

    async def naive(self, paths: Sequence[Path], tenant: str) -> AnchorRun:
        """The plain loop in this process: each file in turn, prepare, embed, store."""
        if self._naive is None:
            self._naive = await asyncio.to_thread(prepare_steps, self.settings)
        steps = self._naive
        embed = self.embed_steps(self.settings.embed_micro_batch or default_micro_batch("cpu"))
        self.torch_threads(None)

        async def call(name: str, inp: Any) -> Any:
            return await getattr(steps, name)(inp, Progress())

        out = AnchorRun(run_id="", tenant=tenant, setting="naive loop")
        started = time.perf_counter()
        run_id, refs = await self._begin(paths, tenant)
        done = [await self._document(ref, call, embed, out) for ref in refs]
        await self._end(run_id, done, out)
        out.wall_s = time.perf_counter() - started
        return out

    async def _begin(self, paths: Sequence[Path], tenant: str) -> tuple[str, list[DocumentRef]]:
        """The uploads and the run's rows, as ``index-local`` records them."""
        run_id = str(uuid.uuid4())
        new: list[repository.NewDocument] = []
        for path in paths:
            key, sha, size = await self.blobs.put_upload(tenant, io.BytesIO(path.read_bytes()))
            new.append(
                repository.NewDocument(
                    document_id=str(uuid.uuid4()),
                    filename=path.name,
                    sha256=sha,
                    size_bytes=size,
                    blob_key=key,
                )
            )
        await repository.create_run(
            self.pool, run_id, run_workflow_id(run_id), new, spec=self.spec, tenant_id=tenant
        )
        await repository.set_run_status(self.pool, run_id, RunState.RUNNING)
        refs = [
            DocumentRef(
                document_id=d.document_id,
                tenant_id=tenant,
                filename=d.filename,
                sha256=d.sha256,
                blob_key=d.blob_key,
            )
            for d in new
        ]
        return run_id, refs

    async def _document(
        self, ref: DocumentRef, call: Call, embed: EmbedSteps, out: AnchorRun
    ) -> bool:
        """One document's steps; its typed failure recorded as the workflow records it."""
        timer = _Timer(out.step_s)
        try:
            with timer("prepare"):
                prepared = await prepare(self.spec, ref, call)
            assert prepared.chunked is not None
            with timer("embed"):
                embedded = await embed.embed(
                    EmbedInput(
                        tenant_id=ref.tenant_id,
                        sha256=ref.sha256,
                        embedder=self.spec.embedder,
                        chunks_key=prepared.chunked.chunks_key,
                        chunk_config=prepared.chunked.chunk_config,
                    ),
                    Progress(),
                )
            with timer("store"):
                await self.store.store(StoreInput.of(ref.document_id, prepared, None, [], embedded))
            return True
        except (DocumentError, ProviderError) as exc:
            await repository.record_outcome(
                self.pool, ref.document_id, DocStatus.FAILED, exc.error_type, str(exc)
            )
            return False

    async def _end(self, run_id: str, done: list[bool], out: AnchorRun) -> None:
        completed, failed = sum(done), len(done) - sum(done)
        final = (
            RunState.COMPLETED
            if failed == 0
            else RunState.FAILED
            if completed == 0
            else RunState.COMPLETED_WITH_ERRORS
        )
        await repository.set_run_status(
            self.pool, run_id, final, completed=completed, failed=failed, cancelled=0
        )
        out.run_id, out.completed, out.failed = run_id, completed, failed


# --- what both sides made ------------------------------------------------------------------


async def outcomes(pool: asyncpg.Pool, run_id: str) -> tuple[str | None, list[Outcome]]:
    """The run's spec digest and, in upload order, each document's status, error type and
    stored chunks (rows in ``chunks``, every generation)."""
    rid = uuid.UUID(run_id)
    digest = await pool.fetchval("SELECT pipeline_digest FROM runs WHERE run_id = $1", rid)
    rows = await pool.fetch(
        """SELECT d.filename, d.status, d.error_type,
                  (SELECT count(*) FROM chunks c WHERE c.document_id = d.document_id) AS n
           FROM documents d WHERE d.run_id = $1 ORDER BY d.seq""",
        rid,
    )
    return digest, [Outcome(r["filename"], r["status"], int(r["n"]), r["error_type"]) for r in rows]


def differences(
    a: tuple[str | None, list[Outcome]], b: tuple[str | None, list[Outcome]], limit: int = 10
) -> list[str]:
    """Where two passes over the same files disagree: the spec, the files, or a file's
    status or chunk count (error types are reported too)."""
    (spec_a, docs_a), (spec_b, docs_b) = a, b
    out: list[str] = []
    if spec_a != spec_b:
        out.append(f"spec digest {spec_a} != {spec_b}")
    if [d.filename for d in docs_a] != [d.filename for d in docs_b]:
        out.append(f"files differ ({len(docs_a)} vs {len(docs_b)})")
        return out
    for x, y in zip(docs_a, docs_b, strict=True):
        if (x.status, x.chunks, x.error_type) != (y.status, y.chunks, y.error_type):
            out.append(
                f"{x.filename}: {x.status}/{x.chunks} chunks/{x.error_type} vs "
                f"{y.status}/{y.chunks} chunks/{y.error_type}"
            )
    if len(out) > limit:
        out = [*out[:limit], f"… and {len(out) - limit} more"]
    return out


def _cpu(pids: list[int]) -> float:
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


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
