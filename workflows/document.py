"""DocumentWorkflow: one document through prepare (parse, describe, chunk) → enrich → embed
→ store, each step as the run's pipeline spec says."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    FailureError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from activities.bookkeeping import Bookkeeping, RecordOutcomeInput
    from activities.embedding import EmbeddingActivities
    from activities.enrichment import EnrichmentActivities
    from activities.parsing import ParseActivities
    from activities.storing import StoreActivities
    from docindex import search_attributes as sa
    from docindex.errors import QUEUE_UNSERVED, STEP_TIMED_OUT, WORKER_LOST
    from docindex.events import DocumentEvent
    from docindex.metrics import count_in_workflow
    from docindex.models import DocStatus, DocumentOutcome, Step
    from docindex.pagination import page_ranges
    from docindex.spec import AnthropicEnricher, VoyageEmbedder
    from docindex.steps.models import (
        ContextInput,
        Contexts,
        DocumentRef,
        Embedded,
        EmbedInput,
        Enriched,
        EnrichInput,
        Inspected,
        MergeInput,
        PageRangeInput,
        Prepared,
        PrepareInput,
        Stored,
        StoreInput,
    )

    from . import names
    from .derive import derive_into
    from .document_contract import DocumentInput, DocumentProgress
    from .ocr_steps import ocr_and_apply
    from .step_policy import STEP_STATUS, STEPS

T = TypeVar("T")


@workflow.defn(name="DocumentWorkflow")
class DocumentWorkflow:
    def __init__(self) -> None:
        self._progress: DocumentProgress | None = None
        # The queue of this document's CPU steps: the CPU queue, or the large queue for a big
        # document or one whose parse lost its CPU worker too often.
        self._cpu_queue = ""
        # Queues where the parse lost its worker on every attempt, for the quarantine reason.
        self._lost_on: list[str] = []

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> DocumentProgress | None:
        return self._progress

    @workflow.run
    async def run(self, inp: DocumentInput) -> DocumentOutcome:
        self._begin(inp)
        task, spec = inp.task, inp.spec
        try:
            await self._enter(Step.PARSE)
            prepared = await self._on_cpu_queue(self._prepare)
            assert prepared.chunked is not None
            self._progress_of().chunk_count = prepared.chunked.chunk_count
            if prepared.metadata is not None and prepared.metadata.quality is not None:
                self._progress_of().warning = prepared.metadata.quality.warning

            enriched, contexts = await self._enrich(prepared)

            await self._enter(Step.EMBED)
            embedded: Embedded = await self._step(
                EmbeddingActivities.embed_chunks,
                EmbedInput(
                    tenant_id=task.tenant_id,
                    sha256=task.sha256,
                    embedder=spec.embedder,
                    chunks_key=prepared.chunked.chunks_key,
                    chunk_config=prepared.chunked.chunk_config,
                    contexts_keys=[c.contexts_key for c in contexts],
                ),
                queue=self._embed_queue(),
            )

            await self._enter(Step.STORE)
            stored: Stored = await self._step(
                StoreActivities.store_document,
                StoreInput.of(
                    task.document_id,
                    prepared,
                    enriched,
                    contexts,
                    embedded,
                    generation_id=inp.generation_id,
                    derive=inp.derive,
                ),
            )
            await derive_into(inp.task, inp.spec, inp.options, stored.derive_into)
        except ActivityError as err:
            failure = await self._record_failure(err)
            if failure is None:
                raise
            raise failure from err
        except (asyncio.CancelledError, CancelledError):
            await self._finish(DocStatus.CANCELLED, "Cancelled", "cancelled by request")
            raise
        except ApplicationError as err:
            # A local activity (the store) whose retries ran out can fail unwrapped, without
            # an ActivityError around it: recorded like any failed step.
            error_type = err.type or "ApplicationError"
            await self._finish(DocStatus.FAILED, error_type, err.message)
            raise ApplicationError(err.message, type=error_type, non_retryable=True) from err
        return self._complete(stored)

    def _begin(self, inp: DocumentInput) -> None:
        self._input = inp
        task, opts = inp.task, inp.options
        self._progress = DocumentProgress(
            document_id=task.document_id, filename=task.filename, status=DocStatus.RUNNING
        )
        big = 0 < opts.large_document_bytes <= task.size_bytes
        self._cpu_queue = (
            opts.large_task_queue if big and opts.large_task_queue else opts.cpu_task_queue
        )
        self._document = DocumentRef.of(task)

    async def _step(
        self,
        activity: Callable[..., Awaitable[T]],
        arg: Any,
        *,
        queue: str | None = None,
        summary: str | None = None,
    ) -> T:
        """Run one step as the step table says."""
        policy = STEPS[activity]
        opts = self._input.options
        retry = policy.retry
        if policy.poison:
            retry = dataclasses.replace(retry, maximum_attempts=opts.poison_max_attempts)
        if policy.local:
            return await workflow.execute_local_activity_method(
                activity,
                arg,
                start_to_close_timeout=policy.timeout,
                retry_policy=retry,
                summary=summary or activity.__name__,
            )
        heartbeat = max(timedelta(seconds=opts.heartbeat_timeout_s), policy.min_heartbeat)
        return await workflow.execute_activity_method(
            activity,
            arg,
            task_queue=queue or opts.workflow_task_queue,
            start_to_close_timeout=policy.timeout,
            schedule_to_start_timeout=timedelta(seconds=opts.queue_deadline_s),
            heartbeat_timeout=heartbeat if policy.heartbeats else None,
            retry_policy=retry,
            summary=summary or self._input.task.filename,
        )

    async def _prepare(self, queue: str) -> Prepared:
        """Most documents are inspected, parsed, described and chunked by one step. A PDF
        over the spec's split threshold comes back inspected only: its page ranges are
        parsed in parallel on any CPU worker, then merged, described and chunked."""
        spec = self._input.spec
        prepared: Prepared = await self._step(
            ParseActivities.prepare_document,
            PrepareInput(document=self._document, parser=spec.parser, chunker=spec.chunker),
            queue=queue,
        )
        self._progress_of().pages = prepared.inspected.pages
        if prepared.parsed is None:
            prepared = await self._parse_ranges(queue, prepared.inspected)
        if prepared.ocr_pages:
            prepared = await self._ocr(queue, prepared)
        return prepared

    async def _ocr(self, queue: str, prepared: Prepared) -> Prepared:
        """OCR the pages with no readable text, in batches on any CPU worker, then add their
        text to the parse, describe and chunk it."""
        await self._enter(Step.OCR)

        def run_step(activity: Any, arg: Any, *, summary: str) -> Awaitable[Any]:
            return self._step(activity, arg, queue=queue, summary=summary)

        return await ocr_and_apply(
            run_step,
            self._document,
            self._input.spec,
            self._input.options.max_parallel_ranges,
            prepared,
            self._progress_of(),
        )

    async def _parse_ranges(self, queue: str, inspected: Inspected) -> Prepared:
        spec, opts = self._input.spec, self._input.options
        progress = self._progress_of()
        progress.pages_parsed = 0
        window = asyncio.Semaphore(opts.max_parallel_ranges)

        async def parse_range(first: int, last: int) -> list[str]:
            async with window:
                result = await self._step(
                    ParseActivities.parse_page_range,
                    PageRangeInput(
                        document=self._document,
                        parser=spec.parser,
                        first_page=first,
                        last_page=last,
                    ),
                    queue=queue,
                    summary=f"{self._document.filename}: pages {first}-{last}",
                )
            progress.pages_parsed = (progress.pages_parsed or 0) + last - first + 1
            await self._record_event()
            return result.part_keys

        ranges = page_ranges(1, inspected.pages or 0, spec.parser.range_pages)
        parts = await asyncio.gather(*(parse_range(a, b) for a, b in ranges))
        return await self._step(
            ParseActivities.merge_parsed_parts,
            MergeInput(
                document=self._document,
                parser=spec.parser,
                chunker=spec.chunker,
                part_keys=[key for keys in parts for key in keys],
            ),
            queue=queue,
        )

    async def _enrich(self, prepared: Prepared) -> tuple[Enriched | None, list[Contexts]]:
        """Describe the document, then give each chunk its situating context, on the
        rate-limited LLM queue. With no LLM in the spec the step is skipped."""
        enricher, opts = self._input.spec.enricher, self._input.options
        if not isinstance(enricher, AnthropicEnricher):
            return None, []
        await self._enter(Step.ENRICH)
        assert prepared.parsed is not None and prepared.chunked is not None
        chunked, sha256 = prepared.chunked, self._document.sha256
        enriched: Enriched = await self._step(
            EnrichmentActivities.enrich_document,
            EnrichInput(
                tenant_id=self._document.tenant_id,
                sha256=sha256,
                parsed_key=prepared.parsed.parsed_key,
                enricher=enricher,
            ),
            queue=opts.llm_task_queue,
        )
        window = asyncio.Semaphore(4)

        async def contextualize(inp: ContextInput) -> Contexts:
            async with window:
                return await self._step(
                    EnrichmentActivities.contextualize_chunks,
                    inp,
                    queue=opts.llm_task_queue,
                    summary=f"{self._document.filename}: chunks {inp.first}-{inp.last}",
                )

        inputs = enriched.context_inputs(self._document.tenant_id, sha256, enricher, chunked)
        return enriched, list(await asyncio.gather(*(contextualize(i) for i in inputs)))

    def _embed_queue(self) -> str:
        opts = self._input.options
        if isinstance(self._input.spec.embedder, VoyageEmbedder):
            return opts.embed_api_task_queue
        return opts.gpu_task_queue

    async def _on_cpu_queue(self, step: Callable[[str], Awaitable[T]]) -> T:
        """Run the parsing steps on this document's queue; a document that lost its CPU
        worker on every attempt gets another chance on the large queue (more memory, one
        document at a time), when one is configured. Page ranges already saved are not
        parsed again."""
        large = self._input.options.large_task_queue
        try:
            return await step(self._cpu_queue)
        except ActivityError as err:
            if not _worker_lost(err):
                raise
            self._lost_on.append(self._cpu_queue)
            if not large or self._cpu_queue == large:
                raise
        workflow.logger.warning(
            "%s lost its worker on every attempt on %s; moving it to %s",
            self._document.filename,
            self._cpu_queue,
            large,
        )
        self._cpu_queue = large
        return await step(self._cpu_queue)

    async def _enter(self, step: Step) -> None:
        # Who wants a running document's step asks this workflow (the status query) or
        # follows its run's events: a signal to the run per step would cost two workflow
        # tasks per step and document. Each upsert is a history event and a visibility
        # write, each event a local activity: only those that someone can see are made.
        self._progress_of().step = step
        status = STEP_STATUS.get(step)
        if status is not None and _doc_status() != status:
            workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(status)])
        if step is not Step.STORE:
            # The store step records its own events, before and after its transaction.
            await self._record_event()

    async def _record_event(self) -> None:
        """Append the document's state to its run's events (live stream, webhooks). A local
        activity: it runs inside the workflow task that schedules the step, so it costs one
        Postgres statement, not a workflow task. A derive is not part of any run's events."""
        if self._input.derive:
            return
        progress = self._progress_of()
        event = DocumentEvent(
            document_id=progress.document_id,
            status=progress.status,
            step=progress.step,
            pages_parsed=progress.pages_parsed,
        )
        try:
            await self._step(Bookkeeping.record_document_event, event)
        except CancelledError:
            raise
        except FailureError as err:
            # An ActivityError; a local activity's last failure can also arrive unwrapped
            # (the ApplicationError its exception became). Either way the document goes on:
            # its status and outcome are recorded by the steps that follow.
            if isinstance(err.cause, CancelledError):
                raise
            workflow.logger.warning("%s: event not recorded: %s", progress.filename, err)

    def _complete(self, stored: Stored) -> DocumentOutcome:
        progress = self._progress_of()
        progress.chunk_count = stored.chunk_count
        progress.status = DocStatus.COMPLETED
        workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(DocStatus.COMPLETED.value)])
        count_in_workflow(
            "docindex_documents",
            "Documents that ended, by status",
            {"status": "completed", "error_type": ""},
        )
        # The run learns of the completion from this workflow's result.
        return DocumentOutcome(document_id=progress.document_id, status=DocStatus.COMPLETED)

    async def _record_failure(self, err: ActivityError) -> ApplicationError | None:
        """Record why a step ended this document; the error to end the workflow with (None:
        it was cancelled, and the cancellation itself is raised)."""
        if _worker_lost(err):
            where = self._lost_on or [self._cpu_queue]
            message = (
                f"quarantined: {err.activity_type} lost its worker on every attempt "
                f"(on {' then on '.join(where)}): no attempt heartbeat within the heartbeat "
                "timeout, so the worker running it died (crash, out-of-memory kill) or hung "
                "on this document. Not retried further."
            )
            await self._finish(DocStatus.QUARANTINED, WORKER_LOST, message)
            return ApplicationError(message, type=WORKER_LOST, non_retryable=True)
        if isinstance(err.cause, CancelledError):
            await self._finish(DocStatus.CANCELLED, "Cancelled", "cancelled by request")
            return None
        error_type, message = _describe(err)
        await self._finish(DocStatus.FAILED, error_type, message)
        return ApplicationError(message, type=error_type, non_retryable=True)

    async def _finish(self, status: DocStatus, error_type: str, message: str) -> None:
        """Record a document that will not complete, in Postgres and with the parent."""
        progress = self._progress_of()
        progress.status, progress.error_type, progress.error = status, error_type, message
        workflow.upsert_search_attributes(
            [sa.DOC_STATUS.value_set(status.value), sa.ERROR_TYPE.value_set(error_type)]
        )
        count_in_workflow(
            "docindex_documents",
            "Documents that ended, by status",
            {"status": status.value, "error_type": error_type},
        )
        outcome = DocumentOutcome(
            document_id=progress.document_id, status=status, error_type=error_type, error=message
        )
        derive = self._input.derive
        record = RecordOutcomeInput(
            outcome=outcome, generation_id=self._input.generation_id if derive else None
        )
        # Runs even while this workflow is being cancelled: the cleanup must happen.
        await asyncio.shield(self._step(Bookkeeping.record_document_outcome, record))
        # Delivered before this workflow ends: the error message travels with it. A derive's
        # parent learns the outcome from its result.
        if not derive:
            await self._tell_parent()

    async def _tell_parent(self) -> None:
        parent = workflow.info().parent
        if parent is None:
            return
        try:
            await workflow.get_external_workflow_handle(parent.workflow_id).signal(
                names.DOCUMENT_PROGRESS_SIGNAL, self._progress_of().model_copy(deep=True)
            )
        except ApplicationError:
            # The run may already have closed (it was terminated); our own state still
            # holds, and Postgres has the outcome.
            workflow.logger.warning("could not signal run %s", parent.workflow_id)

    def _progress_of(self) -> DocumentProgress:
        assert self._progress is not None
        return self._progress


def _doc_status() -> str | None:
    return workflow.info().typed_search_attributes.get(sa.DOC_STATUS)


def _worker_lost(err: ActivityError) -> bool:
    """Retries ran out and the last attempt timed out on its heartbeat: its worker went
    silent (died or hung). Bad input fails fast with a typed error instead, an outage of
    Postgres or a provider fails with the error it raised, and a step that kept beating but
    ran out of time fails as StepTimedOut, so none is mistaken for a poison document."""
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type is TimeoutType.HEARTBEAT


def _describe(err: ActivityError) -> tuple[str, str]:
    cause = err.cause
    if isinstance(cause, TimeoutError) and cause.type is TimeoutType.START_TO_CLOSE:
        return STEP_TIMED_OUT, f"{err.activity_type} did not finish within its time limit"
    if isinstance(cause, TimeoutError) and cause.type is TimeoutType.SCHEDULE_TO_START:
        return QUEUE_UNSERVED, (
            f"no worker took {err.activity_type} from its task queue within the queue "
            "deadline: is a worker of that queue running?"
        )
    if isinstance(cause, ApplicationError):
        return cause.type or "ApplicationError", cause.message
    if cause is not None:
        return type(cause).__name__, str(cause) or type(cause).__name__
    return "ActivityError", str(err)
