"""DocumentBatchWorkflow: several documents of a big run in one workflow, either together
(lock-step: one activity per step for all of them) or side by side (each through its own
steps, none waiting for another). A generation's build derives its documents in such
batches too, from the parses they have (``BatchInput.derive``).

A child workflow per document costs the same orchestration whatever its size (a start, a
close, about five workflow tasks between it and its run): for a 2 KB note that is most of
what indexing it costs, and on a run of real documents several per cent. A batch pays it
once for up to ``batch_documents`` documents. Small documents go in lock-step (one
activity per step is what makes a note cheap); the others of a run of many side by side,
so a long parse holds up no other document's embedding and the CPU and GPU workers stay
overlapped as with a workflow each. A batch takes the happy path only: a document it
cannot take further (bad bytes, a parse that died, a PDF to split into page ranges, a step
that kept failing; in lock-step also pages to OCR) is handed back to the run, which gives
it a DocumentWorkflow of its own, with the retries, typed outcome, quarantine and history
every document gets. So every failed document still has a workflow an operator can find by
its DocStatus; a completed one has its rows, its run's events and this batch's history.
The run hears of each hand-back by a signal as it happens, so such a document starts (and
a bad file fails) while its batch goes on with the others, not when the batch ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.bookkeeping import Bookkeeping, RecordOutcomeInput
    from activities.embedding import EmbeddingActivities
    from activities.parsing import ParseActivities
    from activities.storing import StoreActivities
    from docindex import search_attributes as sa
    from docindex.events import DocumentEvent
    from docindex.metrics import count_in_workflow
    from docindex.models import DocStatus, DocumentOutcome, DocumentTask, Step
    from docindex.spec import VoyageEmbedder
    from docindex.steps.models import (
        DeriveTarget,
        DocumentRef,
        EmbedBatchInput,
        Embedded,
        EmbeddedBatch,
        EmbedInput,
        HandedBack,
        PrepareBatchInput,
        Prepared,
        PreparedBatch,
        PrepareInput,
        StoreBatchInput,
        Stored,
        StoredBatch,
        StoreInput,
    )

    from . import names
    from .batch_contract import BatchInput, BatchOutcome, HandedBackNotice
    from .derive import derive_into
    from .document_contract import DocumentProgress
    from .ocr_steps import ocr_and_apply
    from .step_policy import BATCH_RETRY, STEP_STATUS, STEPS

T = TypeVar("T")


@workflow.defn(name="DocumentBatchWorkflow")
class DocumentBatchWorkflow:
    def __init__(self) -> None:
        self._progress: dict[str, DocumentProgress] = {}
        self._cancel_requested: set[str] = set()
        self._outcome = BatchOutcome()
        self._telling: set[asyncio.Task[None]] = set()

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> list[DocumentProgress]:
        return list(self._progress.values())

    @workflow.signal(name=names.CANCEL_DOCUMENT_SIGNAL)
    def cancel_document(self, document_id: str) -> None:
        """Cancel one document: it leaves the batch before its next step (one already in
        its store step completes)."""
        if document_id in self._progress:
            self._cancel_requested.add(document_id)

    @workflow.run
    async def run(self, inp: BatchInput) -> BatchOutcome:
        self._input = inp
        tasks = {t.document_id: t for t in inp.tasks}
        wid = workflow.info().workflow_id
        for t in inp.tasks:
            self._progress[t.document_id] = DocumentProgress(
                document_id=t.document_id,
                filename=t.filename,
                status=DocStatus.RUNNING,
                step=Step.PARSE,
                workflow_id=wid,
            )
        try:
            if inp.side_by_side:
                await self._side_by_side(tasks)
                await self._told()
                return self._outcome
            await self._events(tasks)
            prepared = self._still_in(await self._prepare(self._still_in(tasks)))
            self._enter(Step.EMBED, prepared)
            await self._events(prepared)
            embedded = await self._embed(self._still_in(prepared), tasks)
            stored = await self._store(self._still_in(embedded))
            # Asked too late for those stored: they completed.
            await self._cancel(self._undecided(d for d in tasks if d not in stored))
            self._complete(list(stored))
            await self._derive(tasks, stored)
            await self._told()
        except (asyncio.CancelledError, CancelledError, ActivityError) as err:
            # A step raises an ActivityError only when it was cancelled (any other failure
            # hands its documents back).
            if isinstance(err, ActivityError) and not isinstance(err.cause, CancelledError):
                raise
            await self._cancel(self._undecided(tasks))
            raise
        return self._outcome

    async def _side_by_side(self, tasks: dict[str, DocumentTask]) -> None:
        """Each document through its own steps, none waiting for another: what a workflow
        each would do, without a workflow each. Those cancelled meanwhile are recorded at
        the end, as in lock-step."""
        lane = asyncio.Semaphore(max(self._input.parallel, 1))

        async def in_turn(doc: str, task: DocumentTask) -> list[DeriveTarget] | None:
            async with lane:
                if doc in self._cancel_requested:
                    return None
                return await self._one(doc, task)

        for progress in self._progress.values():
            progress.status, progress.step = DocStatus.QUEUED, None
        stored = await asyncio.gather(*(in_turn(doc, task) for doc, task in tasks.items()))
        await self._cancel(self._undecided(tasks))
        if self._outcome.completed:
            workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(DocStatus.COMPLETED.value)])
        await self._derive(tasks, dict(zip(tasks, stored, strict=True)))

    async def _derive(
        self, tasks: dict[str, DocumentTask], stored: dict[str, list[DeriveTarget] | None]
    ) -> None:
        """Each stored document into the tenant's other live generations, if any."""
        await asyncio.gather(
            *(
                derive_into(tasks[doc], self._input.spec, self._input.options, targets)
                for doc, targets in stored.items()
                if targets
            )
        )

    async def _one(self, doc: str, task: DocumentTask) -> list[DeriveTarget] | None:
        """One document of a side-by-side batch: prepare (and OCR), embed, store. None: it
        was handed back or cancelled on the way; else what to derive it into."""
        spec, opts = self._input.spec, self._input.options
        document, progress = DocumentRef.of(task), self._progress[doc]
        progress.status, progress.step = DocStatus.RUNNING, Step.PARSE
        await self._events([doc])
        cpu = opts.cpu_task_queue

        async def run_step(activity: Any, arg: Any, *, summary: str) -> Any:
            result = await self._step(
                activity, arg, {doc: task}, queue=cpu, summary=summary, retry=BATCH_RETRY
            )
            if result is None:
                raise _HandedBack
            return result

        try:
            prepared: Prepared = await run_step(
                ParseActivities.prepare_document,
                PrepareInput(document=document, parser=spec.parser, chunker=spec.chunker),
                summary=task.filename,
            )
            if prepared.parsed is None:
                # Page ranges to parse: the steps of a big document, in its own workflow.
                self._hand_back({doc: HandedBack(error_type="MoreSteps", error="page ranges")})
                return None
            progress.pages = prepared.inspected.pages
            if prepared.ocr_pages and doc not in self._cancel_requested:
                progress.step = Step.OCR
                await self._events([doc])
                prepared = await ocr_and_apply(
                    run_step, document, spec, opts.max_parallel_ranges, prepared, progress
                )
            if doc in self._cancel_requested:
                return None
            if prepared.chunked is None:
                self._hand_back({doc: HandedBack(error_type="MoreSteps", error="not chunked")})
                return None
            self._prepared(doc, prepared)
            progress.step = Step.EMBED
            await self._events([doc])
            hosted = isinstance(spec.embedder, VoyageEmbedder)
            embedded: Embedded | None = await self._step(
                EmbeddingActivities.embed_chunks,
                self._embed_input(task, prepared),
                {doc: task},
                queue=opts.embed_api_task_queue if hosted else opts.gpu_task_queue,
                summary=task.filename,
            )
            if embedded is None or doc in self._cancel_requested:
                return None
            progress.step = Step.STORE
            result: Stored | None = await self._step(
                StoreActivities.store_document,
                StoreInput.of(
                    doc,
                    prepared,
                    None,
                    [],
                    embedded,
                    generation_id=self._input.generation_id,
                    derive=self._input.derive,
                ),
                {doc: task},
                summary=task.filename,
            )
        except _HandedBack:
            return None
        if result is None:
            return None
        progress.chunk_count = result.chunk_count
        self._completed(doc)
        return result.derive_into

    def _still_in(self, docs: dict[str, T]) -> dict[str, T]:
        """The documents of a step's result that go on: not handed back or cancelled."""
        return {
            d: v
            for d, v in docs.items()
            if d not in self._cancel_requested and d not in self._outcome.handed_back
        }

    def _undecided(self, docs: Iterable[str]) -> list[str]:
        """Those of ``docs`` not yet completed, cancelled or handed back."""
        done = {*self._outcome.completed, *self._outcome.cancelled, *self._outcome.handed_back}
        return [d for d in docs if d not in done]

    async def _prepare(self, tasks: dict[str, DocumentTask]) -> dict[str, Prepared]:
        spec = self._input.spec
        items = [
            PrepareInput(document=DocumentRef.of(t), parser=spec.parser, chunker=spec.chunker)
            for t in tasks.values()
        ]
        result: PreparedBatch | None = await self._step(
            ParseActivities.prepare_documents,
            PrepareBatchInput(items=items),
            tasks,
            queue=self._input.options.cpu_task_queue,
        )
        if result is None:
            return {}
        self._hand_back(result.handed_back)
        ready: dict[str, Prepared] = {}
        for doc, prepared in result.prepared.items():
            if prepared.parsed is None or prepared.ocr_pages or prepared.chunked is None:
                # Page ranges or OCR to run: steps of their own, in the document's workflow,
                # which reuses the parse saved here.
                self._hand_back({doc: HandedBack(error_type="MoreSteps", error="more steps")})
                continue
            self._prepared(doc, prepared)
            ready[doc] = prepared
        return ready

    def _prepared(self, doc: str, prepared: Prepared) -> None:
        """What a document's status shows once it is parsed and chunked."""
        assert prepared.chunked is not None
        progress = self._progress[doc]
        progress.pages = prepared.inspected.pages
        progress.chunk_count = prepared.chunked.chunk_count
        if prepared.metadata is not None and prepared.metadata.quality is not None:
            progress.warning = prepared.metadata.quality.warning

    def _embed_input(self, task: DocumentTask, prepared: Prepared) -> EmbedInput:
        assert prepared.chunked is not None
        return EmbedInput(
            tenant_id=task.tenant_id,
            sha256=task.sha256,
            embedder=self._input.spec.embedder,
            chunks_key=prepared.chunked.chunks_key,
            chunk_config=prepared.chunked.chunk_config,
        )

    async def _embed(
        self, prepared: dict[str, Prepared], tasks: dict[str, DocumentTask]
    ) -> dict[str, tuple[Prepared, Embedded]]:
        spec, opts = self._input.spec, self._input.options
        items = {doc: self._embed_input(tasks[doc], p) for doc, p in prepared.items()}
        if isinstance(spec.embedder, VoyageEmbedder):
            # A hosted API's rate limit is its queue's activities per second, each activity
            # one document's requests: so one activity per document here too.
            queue = opts.embed_api_task_queue
            answers: list[Embedded | None] = await asyncio.gather(
                *(
                    self._step(EmbeddingActivities.embed_chunks, item, {doc: item}, queue=queue)
                    for doc, item in items.items()
                )
            )
            return {
                doc: (prepared[doc], e)
                for doc, e in zip(items, answers, strict=True)
                if e is not None
            }
        result: EmbeddedBatch | None = await self._step(
            EmbeddingActivities.embed_documents,
            EmbedBatchInput(items=items),
            prepared,
            queue=opts.gpu_task_queue,
        )
        if result is None:
            return {}
        self._hand_back(result.handed_back)
        return {doc: (prepared[doc], e) for doc, e in result.embedded.items()}

    async def _store(
        self, embedded: dict[str, tuple[Prepared, Embedded]]
    ) -> dict[str, list[DeriveTarget]]:
        """Store each; what each must be derived into (other live generations)."""
        items = [
            StoreInput.of(
                doc,
                p,
                None,
                [],
                e,
                generation_id=self._input.generation_id,
                derive=self._input.derive,
            )
            for doc, (p, e) in embedded.items()
        ]
        for doc in embedded:
            self._progress[doc].step = Step.STORE
        result: StoredBatch | None = await self._step(
            StoreActivities.store_documents, StoreBatchInput(items=items), embedded
        )
        if result is None:
            return {}
        self._hand_back(result.handed_back)
        for doc, stored in result.stored.items():
            self._progress[doc].chunk_count = stored.chunk_count
        return {doc: stored.derive_into for doc, stored in result.stored.items()}

    async def _step(
        self,
        activity: Callable[..., Awaitable[T]],
        arg: Any,
        docs: dict[str, Any],
        *,
        queue: str | None = None,
        summary: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> T | None:
        """Run one step for the documents as the step table says (or with ``retry``).
        None: the step failed for good (its retries ran out), and its documents were
        handed back."""
        if not docs:
            return None
        policy, opts = STEPS[activity], self._input.options
        summary = summary or f"{len(docs)} documents"
        retry = retry or policy.retry
        try:
            if policy.local:
                return await workflow.execute_local_activity_method(
                    activity,
                    arg,
                    start_to_close_timeout=policy.timeout,
                    retry_policy=retry,
                    summary=summary,
                )
            return await workflow.execute_activity_method(
                activity,
                arg,
                task_queue=queue or opts.workflow_task_queue,
                start_to_close_timeout=policy.timeout,
                schedule_to_start_timeout=timedelta(seconds=opts.queue_deadline_s),
                heartbeat_timeout=max(
                    timedelta(seconds=opts.heartbeat_timeout_s), policy.min_heartbeat
                )
                if policy.heartbeats
                else None,
                retry_policy=retry,
                summary=summary,
            )
        except (ActivityError, ApplicationError) as err:
            if isinstance(err.cause, CancelledError):
                raise
            error_type, message = _described(err)
            self._hand_back({d: HandedBack(error_type=error_type, error=message) for d in docs})
            return None

    def _hand_back(self, docs: dict[str, HandedBack]) -> None:
        for doc, why in docs.items():
            workflow.logger.info("%s: handed back (%s)", self._progress[doc].filename, why.error)
            self._outcome.handed_back[doc] = why
            progress = self._progress[doc]
            progress.status, progress.step, progress.workflow_id = DocStatus.QUEUED, None, None
        if docs:
            told = asyncio.create_task(self._tell_run(dict(docs)))
            self._telling.add(told)
            told.add_done_callback(self._telling.discard)

    async def _tell_run(self, docs: dict[str, HandedBack]) -> None:
        parent = workflow.info().parent
        if parent is None:
            return
        notice = HandedBackNotice(batch_workflow_id=workflow.info().workflow_id, documents=docs)
        try:
            await workflow.get_external_workflow_handle(
                parent.workflow_id, run_id=parent.run_id
            ).signal(names.HANDED_BACK_SIGNAL, notice)
        except ApplicationError:
            # The run closed meanwhile (terminated); the outcome names these documents too.
            workflow.logger.warning("could not signal run %s", parent.workflow_id)

    async def _told(self) -> None:
        """Until every hand-back signal is delivered: the run hears of a document before
        it reads this batch's outcome."""
        while pending := [t for t in self._telling if not t.done()]:
            await asyncio.gather(*pending)

    def _enter(self, step: Step, docs: Collection[str]) -> None:
        for doc in docs:
            self._progress[doc].step = step
        status = STEP_STATUS.get(step)
        if status is not None and docs:
            workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(status)])

    async def _events(self, docs: Iterable[str]) -> None:
        """Each document's step in its run's events (live stream, webhooks), all in one
        local activity. Like a DocumentWorkflow's, not worth holding the documents up for.
        A derive is in no run's events."""
        if self._input.derive:
            return
        batch = [
            DocumentEvent(
                document_id=doc, status=self._progress[doc].status, step=self._progress[doc].step
            )
            for doc in docs
        ]
        if not batch:
            return
        try:
            await self._local(Bookkeeping.record_document_events, batch)
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise
            workflow.logger.warning("events not recorded: %s", err)

    async def _cancel(self, docs: list[str], message: str = "cancelled by request") -> None:
        """Record these documents cancelled, in Postgres (a document indexed before keeps
        its chunks and stays completed there; a derive's outcome is its generation's) and
        in this batch's outcome."""
        if not docs:
            return
        outcomes = []
        for doc in docs:
            progress = self._progress[doc]
            progress.status, progress.error_type, progress.error = (
                DocStatus.CANCELLED,
                "Cancelled",
                message,
            )
            self._outcome.cancelled.append(doc)
            outcomes.append(
                RecordOutcomeInput(
                    outcome=DocumentOutcome(
                        document_id=doc,
                        status=DocStatus.CANCELLED,
                        error_type="Cancelled",
                        error=message,
                    ),
                    generation_id=self._input.generation_id if self._input.derive else None,
                )
            )
        policy = STEPS[Bookkeeping.record_document_outcomes]
        # Runs even while this workflow is being cancelled: the cleanup must happen.
        await asyncio.shield(
            workflow.execute_activity_method(
                Bookkeeping.record_document_outcomes,
                outcomes,
                task_queue=self._input.options.workflow_task_queue,
                start_to_close_timeout=policy.timeout,
                retry_policy=policy.retry,
            )
        )

    async def _local(self, activity: Callable[..., Awaitable[T]], arg: Any) -> T:
        policy = STEPS[activity]
        return await workflow.execute_local_activity_method(
            activity, arg, start_to_close_timeout=policy.timeout, retry_policy=policy.retry
        )

    def _complete(self, docs: list[str]) -> None:
        for doc in docs:
            self._completed(doc)
        # A batch whose documents were all handed back or cancelled completed none.
        if docs:
            workflow.upsert_search_attributes([sa.DOC_STATUS.value_set(DocStatus.COMPLETED.value)])

    def _completed(self, doc: str) -> None:
        self._progress[doc].status = DocStatus.COMPLETED
        self._outcome.completed.append(doc)
        count_in_workflow(
            "docindex_documents",
            "Documents that ended, by status",
            {"status": "completed", "error_type": ""},
        )


class _HandedBack(Exception):
    """A step of a side-by-side document failed for good: it was handed back."""


def _described(err: ActivityError | ApplicationError) -> tuple[str, str]:
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError):
        return cause.type or "ApplicationError", cause.message
    return type(cause or err).__name__, str(cause or err)
