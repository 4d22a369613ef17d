"""GenerationWorkflow: build a new index generation of a tenant from what is indexed.

Every completed document of the tenant is derived into the generation by a
``DocumentWorkflow`` child in derive mode: the parse the document already has is reused
(no re-parse), then it is chunked, enriched and embedded as the generation's spec says and
stored into the generation. A sliding window bounds the children; after a page of them
the workflow continues-as-new, so a tenant of any size keeps a small history. Documents
indexed while the build runs derive themselves into it (``DocumentWorkflow._derive_into``).
The build ends ``ready``: search goes on serving the active generation until the tenant
promotes this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.generations import (
        DocumentToDerive,
        FinishBuildInput,
        GenerationBookkeeping,
        GenerationTotalInput,
        ToDeriveInput,
    )
    from docindex import search_attributes as sa
    from docindex.ids import derive_workflow_id
    from docindex.models import GenerationStatus

    from . import names
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
        self._in_flight: dict[str, workflow.ChildWorkflowHandle] = {}
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
            running=len(self._in_flight),
        )

    @workflow.run
    async def run(self, inp: GenerationInput) -> GenerationSummary:
        self._input = inp
        self._done, self._failed = inp.done, inp.failed
        try:
            await self._build(inp)
        except asyncio.CancelledError:
            # Cancelled by the API or `temporal workflow cancel`: stop every child, then
            # record the build cancelled (its chunks go: they would never be served).
            for handle in self._in_flight.values():
                handle.cancel()
            await workflow.wait_condition(lambda: not self._in_flight)
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
                await workflow.wait_condition(lambda: not self._in_flight)
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
                        opts.documents_per_execution - started, 2 * opts.max_concurrent_documents
                    ),
                ),
            )
            if not page:
                break
            for doc in page:
                await workflow.wait_condition(
                    lambda: len(self._in_flight) < opts.max_concurrent_documents
                )
                await self._start_child(inp, doc)
                cursor = doc.task.document_id
                started += 1
        await workflow.wait_condition(lambda: not self._in_flight)

    async def _start_child(self, inp: GenerationInput, doc: DocumentToDerive) -> None:
        task = doc.task
        spec = inp.spec.model_copy(update={"parser": doc.parser or inp.spec.parser})
        try:
            handle = await workflow.start_child_workflow(
                DocumentWorkflow.run,
                DocumentInput(
                    task=task,
                    spec=spec,
                    options=inp.options,
                    generation_id=inp.generation_id,
                    derive=True,
                ),
                id=derive_workflow_id(inp.generation_id, task.document_id),
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
        self._in_flight[task.document_id] = handle

        async def wait() -> None:
            try:
                await handle
                self._done += 1
            except (ChildWorkflowError, asyncio.CancelledError):
                self._failed += 1
            finally:
                self._in_flight.pop(task.document_id, None)

        waiter = asyncio.create_task(wait())
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
