"""DocumentWorkflow: one document through parse → metadata → enrich → chunk → embed → store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from docindex import search_attributes as sa
    from docindex.errors import DOCUMENT_ERROR_TYPES, PROVIDER_FINAL_ERROR_TYPES, WORKER_LOST
    from docindex.metrics import count_in_workflow
    from docindex.models import (
        ChunkInput,
        ChunkResult,
        ContextInput,
        ContextResult,
        DocStatus,
        DocumentInput,
        DocumentMetadata,
        DocumentOutcome,
        DocumentProgress,
        DocumentTask,
        EmbedInput,
        EmbedResult,
        EnrichInput,
        EnrichResult,
        InspectInput,
        InspectResult,
        MergeInput,
        MetadataInput,
        PageRangeInput,
        PageRangeResult,
        ParseInput,
        ParseResult,
        PipelineOptions,
        PrepareInput,
        PrepareResult,
        RecordOutcomeInput,
        Step,
        StoreInput,
        StoreResult,
    )
    from docindex.pagination import page_ranges, plan_for
    from docindex.usage import Usage
    from workflows import names

T = TypeVar("T")

# Patches (workflow.patched): histories recorded before a change replay the old path.
# Inspect, parse, metadata and chunk as one activity for documents not split into ranges.
PREPARE_IN_ONE_STEP = "prepare-in-one-step"
# Progress signals to the parent run no longer hold the document up.
UNAWAITED_PROGRESS = "unawaited-progress-signals"
# The store step runs on the workflow task queue.
STORE_ON_WORKFLOW_QUEUE = "store-on-workflow-queue"
# No progress signal at each step: the parent hears of a document when it fails or ends.
NO_STEP_SIGNALS = "no-step-signals"
# The store step as a local activity, in the workflow task that learnt of the vectors.
STORE_IN_WORKFLOW_TASK = "store-in-workflow-task"

# DocStatus search attribute while a document is in a step.
STEP_STATUS = {
    Step.PARSE: "parsing",
    Step.METADATA: "metadata",
    Step.CHUNK: "chunking",
    Step.ENRICH: "enriching",
    Step.EMBED: "embedding",
    Step.STORE: "storing",
}

# Hosted APIs: rate limits and outages retry for a long while (a 429 waits as long as the
# provider's Retry-After says); a bad key or a rejected request stops at once.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=30,
    non_retryable_error_types=list(PROVIDER_FINAL_ERROR_TYPES),
)

# Transient failures (a worker restart, a database blip) retry with backoff; bad input does
# not retry at all (the activities raise it non-retryable, and the types are listed here too).
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=list(DOCUMENT_ERROR_TYPES),
)


def poison_retry(max_attempts: int) -> RetryPolicy:
    """Steps that run Docling on untrusted bytes. A document that kills or hangs its worker
    (segfault, out-of-memory kill) times out on every attempt; after ``max_attempts`` it is
    quarantined instead of crash-looping the fleet."""
    return dataclasses.replace(STEP_RETRY, maximum_attempts=max_attempts)


# Storing needs Postgres: an outage of up to about half an hour is waited out (the run's own
# bookkeeping waits for Postgres indefinitely), rather than failing every document that
# reached this step meanwhile.
STORE_RETRY = dataclasses.replace(STEP_RETRY, maximum_attempts=30)


@workflow.defn(name="DocumentWorkflow")
class DocumentWorkflow:
    def __init__(self) -> None:
        self._progress: DocumentProgress | None = None
        self._context_usage: list[Usage] = []
        # The queue of this document's CPU steps: the CPU queue, or the large queue for a big
        # document or one whose parse lost its CPU worker too often.
        self._cpu_queue = ""
        # Queues where the parse lost its worker on every attempt, for the quarantine reason.
        self._lost_on: list[str] = []
        # Progress signals in flight (a reference keeps each task alive).
        self._signals: set[asyncio.Task[None]] = set()

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> DocumentProgress | None:
        return self._progress

    @workflow.run
    async def run(self, inp: DocumentInput) -> DocumentOutcome:
        task, opts = inp.task, inp.options
        self._progress = DocumentProgress(
            document_id=task.document_id, filename=task.filename, status=DocStatus.RUNNING
        )
        big = 0 < opts.large_document_bytes <= task.size_bytes
        self._cpu_queue = (
            opts.large_task_queue if big and opts.large_task_queue else opts.cpu_task_queue
        )
        try:
            await self._enter(Step.PARSE)
            if workflow.patched(PREPARE_IN_ONE_STEP):
                prepared = await self._on_cpu_queue(task, opts, self._prepare_on)
                parsed, metadata, chunked = prepared.parsed, prepared.metadata, prepared.chunked
            else:
                parsed = await self._on_cpu_queue(task, opts, self._parse_on)
                metadata = chunked = None
            assert parsed is not None
            self._progress.pages = parsed.pages
            if metadata is None:
                await self._enter(Step.METADATA)
                metadata = await self._extract_metadata(task, opts, parsed)
            if chunked is None:
                await self._enter(Step.CHUNK)
                chunked = await self._chunk(task, opts, parsed)
            self._progress.chunk_count = chunked.chunk_count

            await self._enter(Step.ENRICH)
            enriched, contexts_keys = await self._enrich(task, opts, parsed, chunked)

            await self._enter(Step.EMBED)
            embedded = await workflow.execute_activity(
                names.EMBED_CHUNKS,
                EmbedInput(
                    document_id=task.document_id,
                    sha256=task.sha256,
                    chunks_key=chunked.chunks_key,
                    chunk_config=chunked.chunk_config,
                    contexts_keys=contexts_keys,
                ),
                result_type=EmbedResult,
                task_queue=opts.embed_task_queue or opts.gpu_task_queue,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
                summary=task.filename,
                retry_policy=PROVIDER_RETRY,
            )

            await self._enter(Step.STORE)
            stored = await self._store(
                opts,
                StoreInput(
                    document_id=task.document_id,
                    chunks_key=chunked.chunks_key,
                    chunk_config=chunked.chunk_config,
                    vectors_key=embedded.vectors_key,
                    model=embedded.model,
                    dimension=embedded.dimension,
                    pages=parsed.pages,
                    metadata=metadata,
                    contexts_keys=contexts_keys,
                    summary=enriched.summary if enriched else None,
                    enrichment_status=enriched.status if enriched else "skipped",
                    enrichment_reason=(
                        enriched.reason if enriched else "disabled (DOCINDEX_ENRICHER=none)"
                    ),
                    usage=[
                        *(enriched.usage if enriched else []),
                        *self._context_usage,
                        *([embedded.usage] if embedded.usage else []),
                    ],
                ),
            )
            self._progress.chunk_count = stored.chunk_count
        except ActivityError as err:
            if _worker_lost(err):
                message = self._quarantine_reason(err)
                await self._finish(
                    DocStatus.QUARANTINED, WORKER_LOST, message, opts.workflow_task_queue
                )
                raise ApplicationError(message, type=WORKER_LOST, non_retryable=True) from err
            if isinstance(err.cause, CancelledError):
                await self._finish(
                    DocStatus.CANCELLED,
                    "Cancelled",
                    "cancelled by request",
                    opts.workflow_task_queue,
                )
                raise
            error_type, message = _describe(err)
            await self._finish(DocStatus.FAILED, error_type, message, opts.workflow_task_queue)
            raise ApplicationError(message, type=error_type, non_retryable=True) from err
        except (asyncio.CancelledError, CancelledError):
            await self._finish(
                DocStatus.CANCELLED, "Cancelled", "cancelled by request", opts.workflow_task_queue
            )
            raise

        self._progress.status = DocStatus.COMPLETED
        workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(DocStatus.COMPLETED.value)])
        count_in_workflow(
            "docindex_documents",
            "Documents that ended, by status",
            {"status": "completed", "error_type": ""},
        )
        # The run learns of the completion from this workflow's result.
        if not workflow.patched(UNAWAITED_PROGRESS):
            await self._report()
        return DocumentOutcome(document_id=task.document_id, status=DocStatus.COMPLETED)

    async def _store(self, opts: PipelineOptions, inp: StoreInput) -> StoreResult:
        """Chunks and vectors into Postgres: a local activity of the workflow worker, which
        holds a pool for it. Its result comes back in the workflow task that started it, and
        the workflow completes in that task too: one workflow task and one activity task
        fewer per document than a scheduled activity, and no wait in a queue."""
        if workflow.patched(STORE_IN_WORKFLOW_TASK):
            return await workflow.execute_local_activity(
                names.STORE_DOCUMENT,
                inp,
                result_type=StoreResult,
                start_to_close_timeout=timedelta(minutes=10),
                retry_policy=STORE_RETRY,
                summary="store",
            )
        return await workflow.execute_activity(
            names.STORE_DOCUMENT,
            inp,
            result_type=StoreResult,
            # Postgres I/O: taken eagerly by the workflow worker, not queued behind parses
            # for a CPU slot.
            task_queue=(
                opts.workflow_task_queue
                if workflow.patched(STORE_ON_WORKFLOW_QUEUE)
                else self._cpu_queue
            ),
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            retry_policy=STORE_RETRY,
        )

    async def _enrich(
        self,
        task: DocumentTask,
        opts: PipelineOptions,
        parsed: ParseResult,
        chunked: ChunkResult,
    ) -> tuple[EnrichResult | None, list[str]]:
        """Describe the document, then give each chunk its situating context, on the
        rate-limited LLM queue. With no LLM configured the step is skipped, not failed."""
        if opts.enricher == "none":
            return None, []
        enriched = await workflow.execute_activity(
            names.ENRICH_DOCUMENT,
            EnrichInput(
                document_id=task.document_id, sha256=task.sha256, parsed_key=parsed.parsed_key
            ),
            result_type=EnrichResult,
            task_queue=opts.llm_task_queue,
            start_to_close_timeout=timedelta(minutes=15),
            heartbeat_timeout=timedelta(seconds=max(opts.heartbeat_timeout_s, 60)),
            summary=task.filename,
            retry_policy=PROVIDER_RETRY,
        )
        if (
            enriched.status != "enriched"
            or not opts.contextual_chunks
            or not chunked.chunk_count
            or enriched.document_text_key is None
        ):
            return enriched, []
        window = asyncio.Semaphore(4)

        async def contextualize(first: int, last: int) -> ContextResult:
            async with window:
                return await workflow.execute_activity(
                    names.CONTEXTUALIZE_CHUNKS,
                    ContextInput(
                        document_id=task.document_id,
                        sha256=task.sha256,
                        document_text_key=enriched.document_text_key or "",
                        chunks_key=chunked.chunks_key,
                        chunk_config=chunked.chunk_config,
                        first=first,
                        last=last,
                    ),
                    result_type=ContextResult,
                    task_queue=opts.llm_task_queue,
                    start_to_close_timeout=timedelta(minutes=30),
                    heartbeat_timeout=timedelta(seconds=max(opts.heartbeat_timeout_s, 60)),
                    retry_policy=PROVIDER_RETRY,
                    summary=f"{task.filename}: chunks {first}-{last}",
                )

        batches = page_ranges(0, chunked.chunk_count - 1, opts.context_chunks_per_activity)
        results = await asyncio.gather(*(contextualize(a, b) for a, b in batches))
        self._context_usage = [u for r in results for u in r.usage]
        return enriched, [r.contexts_key for r in results]

    async def _on_cpu_queue(
        self,
        task: DocumentTask,
        opts: PipelineOptions,
        step: Callable[[DocumentTask, PipelineOptions, str], Awaitable[T]],
    ) -> T:
        """Run the parsing step on this document's queue; one that lost its CPU worker on
        every attempt gets another chance on the large queue (more memory, one document at
        a time), when one is configured. Page ranges already saved are not parsed again."""
        try:
            return await step(task, opts, self._cpu_queue)
        except ActivityError as err:
            if not _worker_lost(err):
                raise
            self._lost_on.append(self._cpu_queue)
            if not opts.large_task_queue or self._cpu_queue == opts.large_task_queue:
                raise
        workflow.logger.warning(
            "%s lost its worker on every attempt on %s; moving it to %s",
            task.filename,
            self._cpu_queue,
            opts.large_task_queue,
        )
        self._cpu_queue = opts.large_task_queue
        return await step(task, opts, self._cpu_queue)

    async def _extract_metadata(
        self, task: DocumentTask, opts: PipelineOptions, parsed: ParseResult
    ) -> DocumentMetadata:
        return await workflow.execute_activity(
            names.EXTRACT_METADATA,
            MetadataInput(
                document_id=task.document_id,
                parsed_key=parsed.parsed_key,
                kind=parsed.kind,
                pipeline=parsed.pipeline,
            ),
            result_type=DocumentMetadata,
            task_queue=self._cpu_queue,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            summary=task.filename,
            retry_policy=STEP_RETRY,
        )

    async def _chunk(
        self, task: DocumentTask, opts: PipelineOptions, parsed: ParseResult
    ) -> ChunkResult:
        return await workflow.execute_activity(
            names.CHUNK_DOCUMENT,
            ChunkInput(
                document_id=task.document_id,
                sha256=task.sha256,
                parsed_key=parsed.parsed_key,
                max_tokens=opts.chunk_max_tokens,
            ),
            result_type=ChunkResult,
            task_queue=self._cpu_queue,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            summary=task.filename,
            retry_policy=STEP_RETRY,
        )

    def _quarantine_reason(self, err: ActivityError) -> str:
        where = self._lost_on or [self._cpu_queue]
        return (
            f"quarantined: {err.activity_type} lost its worker on every attempt "
            f"(on {' then on '.join(where)}): each attempt timed out ({_timeout_kind(err)}), "
            "so the worker running it died (crash, out-of-memory kill) or hung on this "
            "document. Not retried further."
        )

    async def _prepare_on(
        self, task: DocumentTask, opts: PipelineOptions, queue: str
    ) -> PrepareResult:
        """Most documents: inspected, parsed, described and chunked by one activity. A PDF
        over the split threshold comes back inspected only and is parsed as page ranges
        (metadata and chunks then follow as steps of their own)."""
        poison = poison_retry(opts.poison_max_attempts)
        prepared = await workflow.execute_activity(
            names.PREPARE_DOCUMENT,
            PrepareInput(
                document_id=task.document_id,
                filename=task.filename,
                sha256=task.sha256,
                blob_key=task.blob_key,
                password_key=task.password_key,
                split_pdf_pages=opts.split_pdf_pages,
                max_tokens=opts.chunk_max_tokens,
            ),
            result_type=PrepareResult,
            task_queue=queue,
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(seconds=opts.heartbeat_timeout_s),
            summary=task.filename,
            retry_policy=poison,
        )
        if prepared.parsed is None:
            assert self._progress is not None
            self._progress.pages = prepared.inspected.pages
            parsed = await self._parse_ranges(task, opts, queue, prepared.inspected)
            prepared = prepared.model_copy(update={"parsed": parsed})
        return prepared

    async def _parse_on(self, task: DocumentTask, opts: PipelineOptions, queue: str) -> ParseResult:
        """Before PREPARE_IN_ONE_STEP: inspect, then parse whole or as page ranges."""
        heartbeat = timedelta(seconds=opts.heartbeat_timeout_s)
        poison = poison_retry(opts.poison_max_attempts)
        inspected = await workflow.execute_activity(
            names.INSPECT_DOCUMENT,
            InspectInput(
                document_id=task.document_id,
                filename=task.filename,
                blob_key=task.blob_key,
                password_key=task.password_key,
            ),
            result_type=InspectResult,
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=heartbeat,
            summary=task.filename,
            retry_policy=poison,
        )
        assert self._progress is not None
        self._progress.pages = inspected.pages
        split_above = opts.split_pdf_pages or plan_for(inspected.pipeline).split_above
        if inspected.kind != "pdf" or (inspected.pages or 0) <= split_above:
            return await workflow.execute_activity(
                names.PARSE_DOCUMENT,
                ParseInput(
                    document_id=task.document_id,
                    filename=task.filename,
                    sha256=task.sha256,
                    blob_key=task.blob_key,
                    password_key=task.password_key,
                ),
                result_type=ParseResult,
                task_queue=queue,
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=heartbeat,
                summary=task.filename,
                retry_policy=poison,
            )
        return await self._parse_ranges(task, opts, queue, inspected)

    async def _parse_ranges(
        self, task: DocumentTask, opts: PipelineOptions, queue: str, inspected: InspectResult
    ) -> ParseResult:
        """A big PDF as page ranges on any CPU worker, then merged."""
        heartbeat = timedelta(seconds=opts.heartbeat_timeout_s)
        poison = poison_retry(opts.poison_max_attempts)
        assert self._progress is not None
        self._progress.pages_parsed = 0
        window = asyncio.Semaphore(opts.max_parallel_ranges)

        async def parse_range(first: int, last: int) -> PageRangeResult:
            async with window:
                result = await workflow.execute_activity(
                    names.PARSE_PAGE_RANGE,
                    PageRangeInput(
                        document_id=task.document_id,
                        filename=task.filename,
                        sha256=task.sha256,
                        blob_key=task.blob_key,
                        pipeline=inspected.pipeline,
                        first_page=first,
                        last_page=last,
                        password_key=task.password_key,
                    ),
                    result_type=PageRangeResult,
                    task_queue=queue,
                    start_to_close_timeout=timedelta(hours=2),
                    heartbeat_timeout=heartbeat,
                    retry_policy=poison,
                    summary=f"{task.filename}: pages {first}-{last}",
                )
            assert self._progress is not None
            self._progress.pages_parsed = (self._progress.pages_parsed or 0) + last - first + 1
            await self._report()
            return result

        size = opts.range_pages or plan_for(inspected.pipeline).range_pages
        ranges = page_ranges(1, inspected.pages or 0, size)
        results = await asyncio.gather(*(parse_range(a, b) for a, b in ranges))
        return await workflow.execute_activity(
            names.MERGE_PARSED_PARTS,
            MergeInput(
                document_id=task.document_id,
                filename=task.filename,
                sha256=task.sha256,
                pipeline=inspected.pipeline,
                part_keys=[key for r in results for key in r.part_keys],
            ),
            result_type=ParseResult,
            task_queue=queue,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=heartbeat,
            summary=task.filename,
            retry_policy=poison,
        )

    async def _enter(self, step: Step) -> None:
        assert self._progress is not None
        self._progress.step = step
        workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(STEP_STATUS[step])])
        await self._report()

    async def _finish(self, status: DocStatus, error_type: str, message: str, queue: str) -> None:
        """Record a document that will not complete, in Postgres and with the parent."""
        assert self._progress is not None
        self._progress.status = status
        self._progress.error_type = error_type
        self._progress.error = message
        workflow.upsert_search_attributes(
            [sa.DOC_STATUS.value_set(status.value), sa.ERROR_TYPE.value_set(error_type)]
        )
        count_in_workflow(
            "docindex_documents",
            "Documents that ended, by status",
            {"status": status.value, "error_type": error_type},
        )
        outcome = DocumentOutcome(
            document_id=self._progress.document_id,
            status=status,
            error_type=error_type,
            error=message,
        )
        # Runs even while this workflow is being cancelled: the cleanup must happen.
        await asyncio.shield(
            workflow.execute_activity(
                names.RECORD_DOCUMENT_OUTCOME,
                RecordOutcomeInput(outcome=outcome),
                task_queue=queue,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30)),
            )
        )
        # Delivered before this workflow ends: the error message travels with it.
        await self._report(wait=True)

    async def _report(self, *, wait: bool = False) -> None:
        """Tell the parent run about a failure (``wait``: delivered before this workflow
        ends, with its error message).

        Histories from before NO_STEP_SIGNALS also reported every step, awaited before
        UNAWAITED_PROGRESS, sent with the step's other commands after it."""
        parent = workflow.info().parent
        if parent is None or self._progress is None:
            return
        if not wait and workflow.patched(NO_STEP_SIGNALS):
            # Who wants a running document's step asks this workflow (the status query;
            # the API does so for a run's running documents): a signal per step cost the
            # server two workflow tasks and eight events for every document.
            return
        # A snapshot: the progress object keeps changing after this returns.
        sent = self._signal(parent.workflow_id, self._progress.model_copy(deep=True))
        if workflow.patched(UNAWAITED_PROGRESS) and not wait:
            signal = asyncio.create_task(sent)
            self._signals.add(signal)
            signal.add_done_callback(self._signals.discard)
        else:
            await sent

    async def _signal(self, parent_id: str, progress: DocumentProgress) -> None:
        try:
            await workflow.get_external_workflow_handle(parent_id).signal(
                names.DOCUMENT_PROGRESS_SIGNAL, progress
            )
        except ApplicationError:
            # The run may already have closed (it was terminated); our own state still
            # holds, and Postgres has the outcome.
            workflow.logger.warning("could not signal run %s", parent_id)


def _worker_lost(err: ActivityError) -> bool:
    """Retries ran out and the last attempt timed out: its worker went silent (died or hung).
    Bad input fails fast with a typed error instead, and an outage of Postgres or a provider
    fails with the error it raised, so neither is mistaken for a poison document."""
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type in (
        TimeoutType.HEARTBEAT,
        TimeoutType.START_TO_CLOSE,
    )


def _timeout_kind(err: ActivityError) -> str:
    cause = err.cause
    if isinstance(cause, TimeoutError) and cause.type is TimeoutType.START_TO_CLOSE:
        return "start-to-close timeout"
    return "no heartbeat within the heartbeat timeout"


def _describe(err: ActivityError) -> tuple[str, str]:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "ApplicationError", cause.message
    if cause is not None:
        return type(cause).__name__, str(cause) or type(cause).__name__
    return "ActivityError", str(err)
