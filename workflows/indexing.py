"""IndexingWorkflow: a run of many documents, one DocumentWorkflow child each, or, for the
small documents of a big run, one DocumentBatchWorkflow per batch of them.

A sliding window bounds how many children run at once; children signal the run when they
fail; the ``status`` query answers from that state and the
children's results (the API asks running children for their step); after a page of
documents the run drains its window and continues-as-new so history stays small for runs of
any size. What a batch hands back (a document it could not index) gets its own child.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TerminatedError,
)
from temporalio.exceptions import TimeoutError as ChildTimedOut
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.bookkeeping import (
        Bookkeeping,
        FetchDocumentsInput,
        RecordOutcomeInput,
        RequeuedDocument,
        RequeueInput,
        RunCounts,
        RunStatusUpdate,
    )
    from docindex import search_attributes as sa
    from docindex.errors import DEADLINE_EXCEEDED, WORKER_LOST
    from docindex.ids import batch_workflow_id, document_workflow_id
    from docindex.models import DocStatus, DocumentOutcome, DocumentTask, RetryRequest, RunState
    from docindex.spec import AnthropicEnricher
    from docindex.steps.models import HandedBack

    from . import grouping, names
    from .batch import DocumentBatchWorkflow
    from .batch_contract import BatchInput, BatchOutcome, HandedBackNotice
    from .document import DocumentWorkflow
    from .document_contract import DocumentInput, DocumentProgress
    from .indexing_contract import RetryAccepted, RunInput, RunProgress, RunSummary
    from .step_policy import BOOKKEEPING_RETRY, FIRST_STATUS

T = TypeVar("T")

_LOST = HandedBack(error_type="BatchLost", error="its batch ended without an outcome")


@workflow.defn(name="IndexingWorkflow")
class IndexingWorkflow:
    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        # Set here, not in run(): an update delivered with the start (a retry of a closed
        # run) is handled before run() begins.
        self._input: RunInput | None = inp
        self._documents: dict[str, DocumentProgress] = {}
        self._in_flight: set[str] = set()
        self._completed = self._failed = self._cancelled = self._quarantined = 0
        self._state = RunState.RUNNING
        self._waiters: set[asyncio.Task[None]] = set()
        self._handles: dict[str, workflow.ChildWorkflowHandle] = {}
        # Children running (a batch of documents counts once): what the window bounds.
        self._children = 0
        self._batches: dict[str, workflow.ChildWorkflowHandle] = {}
        # The batch each document is in, and its task, until the batch ends or hands it back.
        self._batch_of: dict[str, str] = {}
        self._batched: dict[str, DocumentTask] = {}
        self._cancel_requested: set[str] = set()
        self._retry_queue: list[DocumentTask] = []
        # Documents started by this execution (alone or in batches): it continues-as-new
        # after a page of them, first pass or retries alike.
        self._started_here = 0
        self._deadline_passed = False
        self._deadline_timer: asyncio.Task[None] | None = None

    @workflow.signal(name=names.DOCUMENT_PROGRESS_SIGNAL)
    def document_progress(self, progress: DocumentProgress) -> None:
        known = self._documents.get(progress.document_id)
        # Outcomes seen by awaiting the child are final; a late signal must not undo them.
        if known is not None and known.status.terminal:
            return
        self._documents[progress.document_id] = progress

    @workflow.signal(name=names.HANDED_BACK_SIGNAL)
    def documents_handed_back(self, notice: HandedBackNotice) -> None:
        """A batch handed these documents back while going on with its others: each is
        queued for a workflow of its own now, not when the batch ends."""
        for doc in notice.documents:
            if self._batch_of.get(doc) != notice.batch_workflow_id:
                continue  # its batch ended first and queued it from the outcome
            task = self._leave_batch(doc)
            self._in_flight.discard(doc)
            progress = self._documents[doc]
            progress.status, progress.workflow_id = DocStatus.QUEUED, None
            self._retry_queue.append(task)

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> RunProgress:
        assert self._input is not None
        return RunProgress(
            run_id=self._input.run_id,
            status=self._state,
            document_count=self._input.document_count,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            running=len(self._in_flight),
            documents=list(self._documents.values()),
            quarantined=self._quarantined,
        )

    @workflow.update(name=names.RETRY_UPDATE)
    async def retry(self, request: RetryRequest) -> RetryAccepted:
        """Index again the failed or cancelled documents of this run (or those named).

        Sent to a closed run with update-with-start, it starts a new execution of the run
        (same workflow id) that indexes only these documents.
        """
        assert self._input is not None
        requeued: list[RequeuedDocument] = await self._bookkeeping(
            Bookkeeping.requeue_documents,
            RequeueInput(
                run_id=self._input.run_id,
                request=request,
                # This execution reopened a closed run: documents still queued were left
                # behind by the closed execution (it was terminated) and nothing runs them.
                include_queued=self._input.retry_only,
            ),
        )
        pending = self._in_flight | {t.document_id for t in self._retry_queue}
        requeued = [d for d in requeued if d.task.document_id not in pending]
        for doc in requeued:
            # It was counted under its old outcome; it counts again when it ends.
            if doc.previous_status == DocStatus.FAILED:
                self._failed -= 1
            elif doc.previous_status == DocStatus.CANCELLED:
                self._cancelled -= 1
            elif doc.previous_status == DocStatus.COMPLETED:
                self._completed -= 1
            elif doc.previous_status == DocStatus.QUARANTINED:
                self._quarantined -= 1
            self._cancel_requested.discard(doc.task.document_id)
            self._documents[doc.task.document_id] = DocumentProgress(
                document_id=doc.task.document_id,
                filename=doc.task.filename,
                status=DocStatus.QUEUED,
            )
            self._retry_queue.append(doc.task)
        self._state = RunState.RUNNING
        if self._deadline_passed:
            # Asked again after the run's deadline: it gets a new one.
            self._input.deadline = workflow.now() + timedelta(
                seconds=self._input.options.run_deadline_s
            )
            self._watch_deadline()
        return RetryAccepted(
            run_id=self._input.run_id, document_ids=[d.task.document_id for d in requeued]
        )

    @workflow.signal(name=names.CANCEL_DOCUMENT_SIGNAL)
    def cancel_document(self, document_id: str) -> None:
        """Cancel one document: now if it is running, or when its turn comes."""
        self._cancel_requested.add(document_id)
        handle = self._handles.get(document_id)
        if handle is not None:
            handle.cancel()
        batch = self._batches.get(self._batch_of.get(document_id, ""))
        if batch is not None:
            self._keep(asyncio.create_task(self._tell_batch(batch, document_id)))

    @workflow.run
    async def run(self, inp: RunInput) -> RunSummary:
        self._input = inp
        self._completed, self._failed, self._cancelled = inp.completed, inp.failed, inp.cancelled
        self._quarantined = inp.quarantined
        if inp.deadline is None:
            inp.deadline = workflow.now() + timedelta(seconds=inp.options.run_deadline_s)
        self._watch_deadline()
        try:
            return await self._index(inp)
        except asyncio.CancelledError:
            # Cancelled by the API, the CLI or `temporal workflow cancel`: stop every
            # document, wait until each has cleaned up, and record the run as cancelled.
            self._cancel_children()
            await self._drain()
            self._cancelled += await self._bookkeeping(
                Bookkeeping.cancel_queued_documents, inp.run_id
            )
            await self._set_status(RunState.CANCELLED)
            raise

    async def _index(self, inp: RunInput) -> RunSummary:
        opts = inp.options
        if inp.next_seq == 0 and not inp.retry_only:
            await self._set_status(RunState.RUNNING)

        next_seq = inp.document_count if inp.retry_only else inp.next_seq
        if inp.retry_pending:
            await self._resume_requeued(next_seq)
        while next_seq < inp.document_count:
            if self._page_done():
                await self._drain()
                self._continue_as_new(next_seq, retry_pending=bool(self._retry_queue))
            page: list[DocumentTask] = await self._bookkeeping(
                Bookkeeping.fetch_run_documents,
                FetchDocumentsInput(
                    run_id=inp.run_id,
                    after_seq=next_seq,
                    limit=min(
                        max(opts.documents_per_execution - self._started_here, 1),
                        2 * opts.max_concurrent_documents * self._batch_size(),
                    ),
                ),
            )
            if not page:
                break
            # The page's small documents fill lock-step batches in their order, whatever lies
            # between them, and the others side-by-side ones where the run is big enough;
            # each document left starts when its turn comes.
            groups: dict[bool, list[DocumentTask]] = {False: [], True: []}
            for task in page:
                side_by_side = self._grouping(task)
                if side_by_side is None:
                    await self._wait_for_room()
                    await self._start_or_skip(task)
                    continue
                groups[side_by_side].append(task)
                if len(groups[side_by_side]) == self._group_size(side_by_side):
                    await self._start_group(groups[side_by_side], side_by_side)
                    groups[side_by_side] = []
            for side_by_side, group in groups.items():
                if group:
                    await self._start_group(group, side_by_side)
            next_seq = page[-1].seq + 1

        while True:
            await self._drain_with_retries(inp.document_count)
            final = await self._record_end()
            # A retry that came in while the end was being recorded reopens the run.
            await workflow.wait_condition(workflow.all_handlers_finished)
            if not self._retry_queue:
                break
        return RunSummary(
            run_id=inp.run_id,
            status=final,
            document_count=inp.document_count,
            completed=self._completed,
            failed=self._failed,
            cancelled=self._cancelled,
            quarantined=self._quarantined,
        )

    async def _record_end(self) -> RunState:
        """Count outcomes in Postgres (right across continue-as-new and retries of a closed
        run) and record the run's final state."""
        assert self._input is not None
        counts: RunCounts = await self._bookkeeping(
            Bookkeeping.count_run_documents, self._input.run_id
        )
        self._completed, self._failed, self._cancelled, self._quarantined = (
            counts.completed,
            counts.failed,
            counts.cancelled,
            counts.quarantined,
        )
        # A quarantined document is an error of the run like a failed one.
        not_indexed = self._failed + self._quarantined
        if not_indexed == 0 and self._cancelled == 0:
            final = RunState.COMPLETED
        elif self._completed == 0 and not_indexed > 0:
            final = RunState.FAILED
        else:
            final = RunState.COMPLETED_WITH_ERRORS
        await self._set_status(final)
        return final

    async def _record(self, task: DocumentTask, progress: DocumentProgress) -> None:
        assert self._input is not None
        await self._bookkeeping(
            Bookkeeping.record_document_outcome,
            RecordOutcomeInput(
                outcome=DocumentOutcome(
                    document_id=task.document_id,
                    status=progress.status,
                    error_type=progress.error_type,
                    error=progress.error,
                )
            ),
        )

    async def _start_or_skip(self, task: DocumentTask) -> None:
        """Start the document's child, unless it was cancelled, the run's deadline passed,
        or it is already running (a retried document the first pass reaches too)."""
        if task.document_id in self._in_flight:
            return
        if task.document_id in self._cancel_requested:
            await self._skip_cancelled(task)
        elif self._deadline_passed:
            await self._skip_cancelled(
                task, DEADLINE_EXCEEDED, "the run's deadline passed before it started"
            )
        else:
            await self._start_child(task)

    def _page_done(self) -> bool:
        assert self._input is not None
        return self._started_here >= self._input.options.documents_per_execution or (
            workflow.info().is_continue_as_new_suggested()
        )

    def _continue_as_new(self, next_seq: int, *, retry_pending: bool) -> None:
        """Continue with a fresh history. Everything it needs is in Postgres: documents
        from ``next_seq`` on, retried ones still queued (``retry_pending``), cancels of
        documents not yet started, the outcome counts."""
        assert self._input is not None
        workflow.continue_as_new(
            self._input.model_copy(
                update={
                    "next_seq": next_seq,
                    "retry_pending": retry_pending,
                    "completed": self._completed,
                    "failed": self._failed,
                    "cancelled": self._cancelled,
                    "quarantined": self._quarantined,
                }
            )
        )

    async def _resume_requeued(self, next_seq: int) -> None:
        """Start the retried documents an earlier execution queued and did not start."""
        assert self._input is not None
        while True:
            page: list[DocumentTask] = await self._bookkeeping(
                Bookkeeping.fetch_requeued_documents,
                FetchDocumentsInput(
                    run_id=self._input.run_id,
                    after_seq=next_seq,
                    limit=self._input.options.documents_per_execution,
                ),
            )
            queued = {t.document_id for t in self._retry_queue}
            page = [t for t in page if t.document_id not in queued | self._in_flight]
            if not page:
                return
            self._retry_queue.extend(page)
            await self._drain_with_retries(next_seq)

    def _watch_deadline(self) -> None:
        """When the run's deadline passes: stop its running documents; those not started
        are skipped. Both end cancelled with DeadlineExceeded and can be retried."""
        assert self._input is not None and self._input.deadline is not None
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_passed = False
        remaining = (self._input.deadline - workflow.now()).total_seconds()

        async def watch() -> None:
            if remaining > 0:
                await workflow.sleep(remaining)
            self._deadline_passed = True
            self._cancel_children()

        self._deadline_timer = asyncio.create_task(watch())

    async def _skip_cancelled(
        self,
        task: DocumentTask,
        error_type: str = "Cancelled",
        error: str = "cancelled by request before it started",
    ) -> None:
        assert self._input is not None
        outcome = DocumentOutcome(
            document_id=task.document_id,
            status=DocStatus.CANCELLED,
            error_type=error_type,
            error=error,
        )
        await self._bookkeeping(
            Bookkeeping.record_document_outcome, RecordOutcomeInput(outcome=outcome)
        )
        self._documents[task.document_id] = DocumentProgress(
            document_id=task.document_id,
            filename=task.filename,
            status=DocStatus.CANCELLED,
            error_type=outcome.error_type,
            error=outcome.error,
        )
        self._cancelled += 1

    async def _start_child(self, task: DocumentTask) -> None:
        assert self._input is not None
        opts = self._input.options
        handle = await workflow.start_child_workflow(
            DocumentWorkflow.run,
            DocumentInput(
                task=task,
                spec=self._input.spec,
                options=opts,
                generation_id=self._input.generation_id,
            ),
            id=document_workflow_id(task.run_id, task.document_id),
            task_queue=opts.workflow_task_queue,
            # What the Temporal UI shows for the child, and what operators filter on.
            static_summary=task.filename,
            static_details=f"{task.size_bytes} bytes, sha256 {task.sha256}",
            memo={"filename": task.filename, "size_bytes": task.size_bytes, "sha256": task.sha256},
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.INDEXING_RUN_ID, task.run_id),
                    SearchAttributePair(sa.DOCUMENT_ID, task.document_id),
                    SearchAttributePair(sa.TENANT_ID, self._input.tenant_id),
                    SearchAttributePair(sa.DOC_STATUS, FIRST_STATUS),
                ]
            ),
            # Cancelling or terminating the run cancels its documents.
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            execution_timeout=timedelta(seconds=opts.document_deadline_s),
        )
        self._started_here += 1
        self._children += 1
        self._in_flight.add(task.document_id)
        self._handles[task.document_id] = handle
        self._documents[task.document_id] = DocumentProgress(
            document_id=task.document_id, filename=task.filename, status=DocStatus.RUNNING
        )

        async def wait_for_child() -> None:
            progress = self._documents[task.document_id]
            try:
                await handle
                progress.status = DocStatus.COMPLETED
                self._completed += 1
            except (ChildWorkflowError, asyncio.CancelledError) as err:
                # Cancelling the child's handle may end this wait with the child's
                # cancellation error or with asyncio's; either way the document is cancelled.
                if (
                    progress.status == DocStatus.CANCELLED
                    or isinstance(err, asyncio.CancelledError)
                    or isinstance(err.cause, CancelledError)
                ):
                    progress.status = DocStatus.CANCELLED
                    self._cancelled += 1
                    if self._deadline_passed and task.document_id not in self._cancel_requested:
                        progress.error_type = DEADLINE_EXCEEDED
                        progress.error = "the run's deadline passed before it was indexed"
                        await self._record(task, progress)
                elif getattr(err.cause, "type", None) == WORKER_LOST:
                    # The child recorded it quarantined (see DocumentWorkflow).
                    progress.status = DocStatus.QUARANTINED
                    progress.error_type = WORKER_LOST
                    progress.error = progress.error or str(err.cause)
                    self._quarantined += 1
                else:
                    progress.status = DocStatus.FAILED
                    cause = err.cause
                    progress.error_type = progress.error_type or getattr(cause, "type", None)
                    progress.error = progress.error or (str(cause) if cause else str(err))
                    if isinstance(cause, TerminatedError | ChildTimedOut):
                        # Terminated or timed out from outside: the child recorded nothing,
                        # so record it here, where a retry can find it.
                        progress.error_type = (
                            "Terminated" if isinstance(cause, TerminatedError) else "TimedOut"
                        )
                        progress.error = f"document workflow {progress.error_type.lower()}"
                        await self._record(task, progress)
                    self._failed += 1
            finally:
                self._children -= 1
                self._in_flight.discard(task.document_id)
                self._handles.pop(task.document_id, None)

        self._keep(asyncio.create_task(wait_for_child()))

    def _batch_size(self) -> int:
        """Documents per batch in this run; 1: a child per document."""
        assert self._input is not None
        return grouping.batch_size(self._input.options, *self._policy())

    def _group_size(self, side_by_side: bool) -> int:
        assert self._input is not None
        return grouping.group_size(self._input.options, *self._policy(), side_by_side)

    def _grouping(self, task: DocumentTask) -> bool | None:
        assert self._input is not None
        return grouping.grouping(self._input.options, *self._policy(), task.size_bytes)

    def _policy(self) -> tuple[int, bool]:
        """What the grouping policy asks of the run: its size, and whether an LLM enriches."""
        assert self._input is not None
        inp = self._input
        return inp.document_count, isinstance(inp.spec.enricher, AnthropicEnricher)

    async def _wait_for_room(self, weight: int = 1) -> None:
        """Until ``weight`` more documents fit in the run's window."""
        assert self._input is not None
        limit = self._input.options.max_concurrent_documents
        await workflow.wait_condition(lambda: self._children + min(weight, limit) <= limit)

    def _weight(self, side_by_side: bool) -> int:
        assert self._input is not None
        return grouping.weight(self._input.options, side_by_side)

    async def _start_group(self, group: list[DocumentTask], side_by_side: bool) -> None:
        """Start a batch (one document alone gets its own child, as always)."""
        await self._wait_for_room(self._weight(side_by_side))
        ready = []
        for task in group:
            if task.document_id in self._in_flight:
                continue
            if task.document_id in self._cancel_requested or self._deadline_passed:
                await self._start_or_skip(task)  # recorded cancelled
            else:
                ready.append(task)
        if len(ready) == 1:
            await self._start_child(ready[0])
        elif ready:
            await self._start_batch(ready, side_by_side)

    async def _start_batch(self, tasks: list[DocumentTask], side_by_side: bool) -> None:
        assert self._input is not None
        opts = self._input.options
        wid = batch_workflow_id(self._input.run_id, tasks[0].document_id)
        handle = await workflow.start_child_workflow(
            DocumentBatchWorkflow.run,
            BatchInput(
                tasks=tasks,
                spec=self._input.spec,
                options=opts,
                generation_id=self._input.generation_id,
                side_by_side=side_by_side,
                parallel=self._weight(side_by_side),
            ),
            id=wid,
            task_queue=opts.workflow_task_queue,
            static_summary=f"{len(tasks)} documents: {tasks[0].filename} … {tasks[-1].filename}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.INDEXING_RUN_ID, self._input.run_id),
                    SearchAttributePair(sa.TENANT_ID, self._input.tenant_id),
                    SearchAttributePair(sa.DOC_STATUS, FIRST_STATUS),
                ]
            ),
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            execution_timeout=timedelta(seconds=opts.document_deadline_s),
        )
        self._started_here += len(tasks)
        self._children += self._weight(side_by_side)
        self._batches[wid] = handle
        for task in tasks:
            self._in_flight.add(task.document_id)
            self._batch_of[task.document_id] = wid
            self._batched[task.document_id] = task
            self._documents[task.document_id] = DocumentProgress(
                document_id=task.document_id,
                filename=task.filename,
                status=DocStatus.RUNNING,
                workflow_id=wid,
            )

        async def wait_for_batch() -> None:
            # Those it handed back on the way (documents_handed_back) are no longer its.
            ours = tasks
            try:
                try:
                    outcome: BatchOutcome = await handle
                finally:
                    ours = [self._leave_batch(t.document_id) for t in self._still_in(wid, tasks)]
                self._batch_ended(ours, outcome)
            except (ChildWorkflowError, asyncio.CancelledError) as err:
                if isinstance(err, asyncio.CancelledError) or isinstance(err.cause, CancelledError):
                    await self._batch_cancelled(ours)
                else:
                    # Terminated, timed out, or failed: each of its documents not indexed
                    # gets a workflow of its own (one stored meanwhile is stored again).
                    workflow.logger.warning("batch %s ended without an outcome: %s", wid, err)
                    self._batch_ended(
                        ours, BatchOutcome(handed_back={t.document_id: _LOST for t in ours})
                    )
            finally:
                self._children -= self._weight(side_by_side)
                self._batches.pop(wid, None)
                for task in ours:
                    self._in_flight.discard(task.document_id)

        self._keep(asyncio.create_task(wait_for_batch()))

    def _still_in(self, wid: str, tasks: list[DocumentTask]) -> list[DocumentTask]:
        return [t for t in tasks if self._batch_of.get(t.document_id) == wid]

    def _leave_batch(self, document_id: str) -> DocumentTask:
        self._batch_of.pop(document_id)
        return self._batched.pop(document_id)

    def _batch_ended(self, tasks: list[DocumentTask], outcome: BatchOutcome) -> None:
        for task in tasks:
            doc = task.document_id
            progress = self._documents[doc]
            progress.workflow_id = None
            if doc in outcome.completed:
                progress.status = DocStatus.COMPLETED
                self._completed += 1
            elif doc in outcome.cancelled:
                progress.status = DocStatus.CANCELLED
                progress.error_type, progress.error = "Cancelled", "cancelled by request"
                self._cancelled += 1
            else:
                progress.status = DocStatus.QUEUED
                self._retry_queue.append(task)

    async def _batch_cancelled(self, tasks: list[DocumentTask]) -> None:
        """The run's cancel or deadline stopped the batch, which recorded its documents not
        stored as cancelled; a deadline says so in their outcome, as for a child."""
        late = []
        for task in tasks:
            progress = self._documents[task.document_id]
            progress.workflow_id = None
            progress.status = DocStatus.CANCELLED
            self._cancelled += 1
            if self._deadline_passed and task.document_id not in self._cancel_requested:
                progress.error_type = DEADLINE_EXCEEDED
                progress.error = "the run's deadline passed before it was indexed"
                late.append(
                    RecordOutcomeInput(
                        outcome=DocumentOutcome(
                            document_id=task.document_id,
                            status=DocStatus.CANCELLED,
                            error_type=progress.error_type,
                            error=progress.error,
                        )
                    )
                )
        if late:
            await self._bookkeeping(Bookkeeping.record_document_outcomes, late)

    def _cancel_children(self) -> None:
        for handle in [*self._handles.values(), *self._batches.values()]:
            handle.cancel()

    async def _tell_batch(self, batch: workflow.ChildWorkflowHandle, document_id: str) -> None:
        try:
            await batch.signal(names.CANCEL_DOCUMENT_SIGNAL, document_id)
        except ApplicationError:
            # It closed meanwhile: what it did with the document is in its outcome.
            workflow.logger.warning("could not signal batch %s", batch.id)

    def _keep(self, waiter: asyncio.Task[None]) -> None:
        # Workflow asyncio tasks are deterministic; keep a reference so none is collected.
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    async def _drain_with_retries(self, next_seq: int) -> None:
        """Wait for every child, starting retried documents as they are queued; after a
        page of children, continue-as-new (the retried documents wait in Postgres)."""
        while True:
            await workflow.wait_condition(
                lambda: (
                    bool(self._retry_queue)
                    or (not self._in_flight and workflow.all_handlers_finished())
                )
            )
            if not self._retry_queue:
                return
            if self._page_done():
                await self._drain()
                self._continue_as_new(next_seq, retry_pending=True)
            task = self._retry_queue.pop(0)
            await self._wait_for_room()
            await self._start_or_skip(task)

    async def _drain(self) -> None:
        await workflow.wait_condition(lambda: not self._in_flight)
        await workflow.wait_condition(workflow.all_handlers_finished)

    async def _set_status(self, state: RunState) -> None:
        """Record the run's state in Postgres, then adopt it: a query that reports a final
        state can rely on the database having it too."""
        assert self._input is not None
        await self._bookkeeping(
            Bookkeeping.set_run_status,
            RunStatusUpdate(
                run_id=self._input.run_id,
                status=state,
                completed=self._completed,
                failed=self._failed,
                cancelled=self._cancelled,
            ),
        )
        self._state = state

    async def _bookkeeping(self, activity: Callable[..., Awaitable[T]], arg: Any) -> T:
        """A short Postgres call (run status, the next page of documents, an outcome).

        A local activity: run by this workflow worker inside the workflow task, with no
        round trip through the server to schedule it and another to report its result."""
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=BOOKKEEPING_RETRY,
        )
