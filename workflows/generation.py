"""GenerationWorkflow: build a new index generation of a tenant from what is indexed.

Every completed document of the tenant is derived into the generation: the parse the
document already has is reused (no re-parse), then it is chunked, enriched and embedded as
the generation's spec says and stored into the generation. As in a run, the small documents
of a big build go in lock-step ``DocumentBatchWorkflow`` batches (one workflow and one
activity per step for up to ``batch_documents`` of them) and its other documents in
side-by-side ones (each through its own steps, one workflow for them all); big documents,
the documents of a small build, and whatever a batch hands back get a ``DocumentWorkflow``
child in derive mode each. A sliding window bounds the children; after a page of documents
the workflow continues-as-new, so a tenant of any size keeps a small history. Documents
indexed while the build runs derive themselves into it (``DocumentWorkflow._derive_into``).
The build ends ``ready``: search goes on serving the active generation until the tenant
promotes this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import CancelledError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.generations import (
        DocumentToDerive,
        FinishBuildInput,
        GenerationBookkeeping,
        GenerationTotalInput,
        ToDeriveInput,
    )
    from docindex import search_attributes as sa
    from docindex.ids import derive_batch_workflow_id, derive_workflow_id
    from docindex.models import GenerationStatus
    from docindex.spec import AnthropicEnricher, PipelineSpec

    from . import grouping, names
    from .batch import DocumentBatchWorkflow
    from .batch_contract import BatchInput, BatchOutcome, HandedBackNotice
    from .document import DocumentWorkflow
    from .document_contract import DocumentInput
    from .generation_contract import GenerationInput, GenerationProgress, GenerationSummary
    from .step_policy import BOOKKEEPING_RETRY, FIRST_STATUS

T = TypeVar("T")


@workflow.defn(name="GenerationWorkflow")
class GenerationWorkflow:
    def __init__(self) -> None:
        self._input: GenerationInput | None = None
        self._status = GenerationStatus.BUILDING
        # Children by workflow id (a batch of documents is one), and the window slots they
        # take (a side-by-side batch as many as it derives at once).
        self._handles: dict[str, workflow.ChildWorkflowHandle] = {}
        self._children = 0
        # Documents being derived, and the batch each is in until it ends or hands it back.
        self._running: set[str] = set()
        self._batch_of: dict[str, str] = {}
        self._batched: dict[str, DocumentToDerive] = {}
        self._handed_back: list[DocumentToDerive] = []
        self._waiters: set[asyncio.Task[None]] = set()
        self._done = self._failed = 0

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> GenerationProgress:
        assert self._input is not None
        return GenerationProgress(
            generation_id=self._input.generation_id,
            status=self._status.value,
            documents_total=self._input.documents_total,
            documents_done=self._done,
            documents_failed=self._failed,
            running=len(self._running),
        )

    @workflow.signal(name=names.HANDED_BACK_SIGNAL)
    def documents_handed_back(self, notice: HandedBackNotice) -> None:
        """A batch could not derive these (a PDF read in page ranges, a step that kept
        failing): each gets a DocumentWorkflow of its own now, not when the batch ends."""
        for doc in notice.documents:
            if self._batch_of.get(doc) == notice.batch_workflow_id:
                self._handed_back.append(self._leave_batch(doc))
                self._running.discard(doc)

    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationSummary:
        self._input = inp
        self._done, self._failed = inp.done, inp.failed
        try:
            await self._build(inp)
        except asyncio.CancelledError:
            # Cancelled by the API or `temporal workflow cancel`: stop every child, then
            # record the build cancelled (its chunks go: they would never be served).
            for handle in self._handles.values():
                handle.cancel()
            await workflow.wait_condition(lambda: not self._handles)
            await self._finish(GenerationStatus.CANCELLED, "cancelled by request")
            raise
        # Nothing derived although there was something to derive: the spec cannot work
        # (a model that does not load, a provider key refused). Partial failures leave it
        # ready: each failed document says why in the generation's documents.
        if self._failed and not self._done:
            await self._finish(
                GenerationStatus.FAILED, f"every one of {self._failed} documents failed"
            )
        else:
            await self._finish(GenerationStatus.READY)
        return GenerationSummary(
            generation_id=inp.generation_id,
            status=self._status.value,
            documents_total=inp.documents_total,
            documents_done=self._done,
            documents_failed=self._failed,
        )

    async def _build(self, inp: GenerationInput) -> None:
        opts = inp.options
        if inp.after_document_id is None and not (inp.done or inp.failed):
            inp.documents_total = await self._bookkeeping(
                GenerationBookkeeping.count_generation_documents,
                GenerationTotalInput(generation_id=inp.generation_id, tenant_id=inp.tenant_id),
            )
        cursor, started = inp.after_document_id, 0
        while True:
            if started >= opts.documents_per_execution or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await self._drain()
                workflow.continue_as_new(
                    inp.model_copy(
                        update={
                            "after_document_id": cursor,
                            "done": self._done,
                            "failed": self._failed,
                        }
                    )
                )
            page: list[DocumentToDerive] = await self._bookkeeping(
                GenerationBookkeeping.documents_to_derive,
                ToDeriveInput(
                    generation_id=inp.generation_id,
                    tenant_id=inp.tenant_id,
                    after_document_id=cursor,
                    limit=min(
                        opts.documents_per_execution - started,
                        2 * opts.max_concurrent_documents * max(opts.batch_documents, 1),
                    ),
                ),
            )
            if not page:
                break
            # The page's documents fill batches in their order, by how they go (lock-step or
            # side by side) and by parser (a batch takes one spec); each document left
            # starts when its turn comes.
            groups: dict[tuple[bool, str], list[DocumentToDerive]] = {}
            for doc in page:
                cursor = doc.task.document_id
                started += 1
                side_by_side = self._grouping(doc)
                if side_by_side is None:
                    await self._room()
                    await self._start_child(doc)
                    continue
                key = (side_by_side, self._spec_of(doc).parser.model_dump_json())
                group = groups.setdefault(key, [])
                group.append(doc)
                if len(group) == self._group_size(side_by_side):
                    await self._start_group(groups.pop(key), side_by_side)
            for (side_by_side, _), group in groups.items():
                await self._start_group(group, side_by_side)
        await self._drain()

    def _grouping(self, doc: DocumentToDerive) -> bool | None:
        """How the document is derived, as a run would index it (workflows/grouping.py):
        in a lock-step batch, a side-by-side one, or a workflow of its own."""
        assert self._input is not None
        return grouping.grouping(self._input.options, *self._policy(), doc.task.size_bytes)

    def _weight(self, side_by_side: bool) -> int:
        assert self._input is not None
        return grouping.weight(self._input.options, side_by_side)

    def _group_size(self, side_by_side: bool) -> int:
        assert self._input is not None
        return grouping.group_size(self._input.options, *self._policy(), side_by_side)

    def _policy(self) -> tuple[int, bool]:
        """What the grouping policy asks of the build: its size, whether an LLM enriches."""
        assert self._input is not None
        inp = self._input
        return inp.documents_total, isinstance(inp.spec.enricher, AnthropicEnricher)

    def _spec_of(self, doc: DocumentToDerive) -> PipelineSpec:
        """The generation's spec with the document's own parser, whose parse is reused."""
        assert self._input is not None
        spec = self._input.spec
        return spec.model_copy(update={"parser": doc.parser or spec.parser})

    async def _room(self, weight: int = 1) -> None:
        """Until ``weight`` more slots fit the window; documents handed back meanwhile
        start first."""
        assert self._input is not None
        limit = self._input.options.max_concurrent_documents
        while True:
            await workflow.wait_condition(
                lambda: bool(self._handed_back) or self._children + min(weight, limit) <= limit
            )
            if not self._handed_back:
                return
            await workflow.wait_condition(lambda: self._children < limit)
            await self._start_child(self._handed_back.pop(0))

    async def _drain(self) -> None:
        """Until every child has ended and every document handed back was derived."""
        while True:
            await workflow.wait_condition(
                lambda: (
                    bool(self._handed_back)
                    or (not self._handles and workflow.all_handlers_finished())
                )
            )
            if not self._handed_back:
                return
            await self._room()

    async def _start_group(self, group: list[DocumentToDerive], side_by_side: bool) -> None:
        """A batch; a document alone gets its own child, as in a run."""
        if len(group) == 1:
            await self._room()
            await self._start_child(group[0])
        else:
            await self._room(self._weight(side_by_side))
            await self._start_batch(group, side_by_side)

    async def _start_child(self, doc: DocumentToDerive) -> None:
        assert self._input is not None
        inp, task = self._input, doc.task
        wid = derive_workflow_id(inp.generation_id, task.document_id)
        try:
            handle = await workflow.start_child_workflow(
                DocumentWorkflow.run,
                DocumentInput(
                    task=task,
                    spec=self._spec_of(doc),
                    options=inp.options,
                    generation_id=inp.generation_id,
                    derive=True,
                ),
                id=wid,
                task_queue=inp.options.workflow_task_queue,
                static_summary=f"{task.filename} → generation {inp.generation_id}",
                execution_timeout=timedelta(seconds=inp.options.document_deadline_s),
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(sa.DOCUMENT_ID, task.document_id),
                        SearchAttributePair(sa.TENANT_ID, inp.tenant_id),
                        SearchAttributePair(sa.DOC_STATUS, FIRST_STATUS),
                    ]
                ),
            )
        except WorkflowAlreadyStartedError:
            return  # indexed just now, and deriving itself into this generation already
        self._began(wid, handle, [doc])

        async def wait() -> None:
            try:
                await handle
                self._done += 1
            except (ChildWorkflowError, asyncio.CancelledError):
                self._failed += 1
            finally:
                self._ended(wid, [doc])

        self._keep(wait())

    async def _start_batch(self, group: list[DocumentToDerive], side_by_side: bool) -> None:
        assert self._input is not None
        inp, weight = self._input, self._weight(side_by_side)
        first, last = group[0].task, group[-1].task
        wid = derive_batch_workflow_id(inp.generation_id, first.document_id)
        handle = await workflow.start_child_workflow(
            DocumentBatchWorkflow.run,
            BatchInput(
                tasks=[d.task for d in group],
                spec=self._spec_of(group[0]),
                options=inp.options,
                generation_id=inp.generation_id,
                derive=True,
                side_by_side=side_by_side,
                parallel=weight,
            ),
            id=wid,
            task_queue=inp.options.workflow_task_queue,
            static_summary=(
                f"{len(group)} documents: {first.filename} … {last.filename} "
                f"→ generation {inp.generation_id}"
            ),
            execution_timeout=timedelta(seconds=inp.options.document_deadline_s),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.TENANT_ID, inp.tenant_id),
                    SearchAttributePair(sa.DOC_STATUS, FIRST_STATUS),
                ]
            ),
        )
        self._began(wid, handle, group, weight)
        for doc in group:
            self._batch_of[doc.task.document_id] = wid
            self._batched[doc.task.document_id] = doc

        async def wait() -> None:
            # Those it handed back on the way (documents_handed_back) are no longer its.
            ours = group
            try:
                try:
                    outcome: BatchOutcome = await handle
                finally:
                    ours = [
                        self._leave_batch(d.task.document_id)
                        for d in group
                        if self._batch_of.get(d.task.document_id) == wid
                    ]
            except (ChildWorkflowError, asyncio.CancelledError) as err:
                if isinstance(err, asyncio.CancelledError) or isinstance(err.cause, CancelledError):
                    # The build was cancelled; the batch recorded its documents cancelled.
                    self._failed += len(ours)
                else:
                    # Terminated, timed out or failed: each of its documents not derived
                    # gets a workflow of its own (one stored meanwhile is stored again).
                    workflow.logger.warning("batch %s ended without an outcome: %s", wid, err)
                    self._handed_back.extend(ours)
            else:
                for doc in ours:
                    document_id = doc.task.document_id
                    if document_id in outcome.completed:
                        self._done += 1
                    elif document_id in outcome.cancelled:
                        self._failed += 1
                    else:
                        self._handed_back.append(doc)
            finally:
                self._ended(wid, ours, weight)

        self._keep(wait())

    def _began(
        self,
        wid: str,
        handle: workflow.ChildWorkflowHandle,
        docs: list[DocumentToDerive],
        weight: int = 1,
    ) -> None:
        self._handles[wid] = handle
        self._children += weight
        self._running.update(d.task.document_id for d in docs)

    def _ended(self, wid: str, docs: list[DocumentToDerive], weight: int = 1) -> None:
        self._handles.pop(wid, None)
        self._children -= weight
        self._running.difference_update(d.task.document_id for d in docs)

    def _leave_batch(self, document_id: str) -> DocumentToDerive:
        self._batch_of.pop(document_id)
        return self._batched.pop(document_id)

    def _keep(self, waiting: Coroutine[Any, Any, None]) -> None:
        # Workflow asyncio tasks are deterministic; keep a reference so none is collected.
        waiter = asyncio.create_task(waiting)
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)

    async def _finish(self, status: GenerationStatus, error: str | None = None) -> None:
        assert self._input is not None
        self._status = await self._bookkeeping(
            GenerationBookkeeping.finish_build,
            FinishBuildInput(generation_id=self._input.generation_id, status=status, error=error),
        )

    async def _bookkeeping(self, activity: Callable[..., Awaitable[T]], arg: Any) -> T:
        return await workflow.execute_local_activity_method(
            activity,
            arg,
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=BOOKKEEPING_RETRY,
        )
