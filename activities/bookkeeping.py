"""Small database activities the workflows use to page documents and record outcomes.

They run on the workflow task queue: they are quick, and must not wait behind parsing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from pydantic import BaseModel
from temporalio import activity

from docindex import repository
from docindex.events import DocumentEvent
from docindex.models import DocStatus, DocumentOutcome, DocumentTask, RetryRequest, RunState
from docindex.repository import events

# Wakes the delivery workflows of these webhooks: they have deliveries to send.
Wake = Callable[[Sequence[str]], Awaitable[None]]


async def no_webhooks(webhook_ids: Sequence[str]) -> None:
    return None


class FetchDocumentsInput(BaseModel):
    run_id: str
    after_seq: int
    limit: int


class RunStatusUpdate(BaseModel):
    run_id: str
    status: RunState
    completed: int
    failed: int
    cancelled: int


class RecordOutcomeInput(BaseModel):
    outcome: DocumentOutcome
    # Set when the document was being derived into a generation under construction: the
    # outcome is the generation's, not the document's.
    generation_id: str | None = None


class RequeueInput(BaseModel):
    run_id: str
    request: RetryRequest
    include_queued: bool = False


class RequeuedDocument(BaseModel):
    task: DocumentTask
    previous_status: DocStatus


class RunCounts(BaseModel):
    completed: int
    failed: int
    cancelled: int
    quarantined: int = 0


class Bookkeeping:
    def __init__(self, pool: asyncpg.Pool, wake: Wake = no_webhooks) -> None:
        self.pool = pool
        self.wake = wake

    @activity.defn
    async def fetch_run_documents(self, inp: FetchDocumentsInput) -> list[DocumentTask]:
        return await repository.fetch_documents(self.pool, inp.run_id, inp.after_seq, inp.limit)

    @activity.defn
    async def fetch_requeued_documents(self, inp: FetchDocumentsInput) -> list[DocumentTask]:
        """Retried documents not started yet, before ``after_seq`` (here: the main pass's
        position, which they are behind)."""
        return await repository.fetch_requeued_documents(
            self.pool, inp.run_id, inp.after_seq, inp.limit
        )

    @activity.defn
    async def set_run_status(self, inp: RunStatusUpdate) -> None:
        await repository.set_run_status(
            self.pool,
            inp.run_id,
            inp.status,
            completed=inp.completed,
            failed=inp.failed,
            cancelled=inp.cancelled,
        )
        if inp.status not in (RunState.QUEUED, RunState.RUNNING):
            await self.wake(await events.record_run_end(self.pool, inp.run_id, inp.status))

    @activity.defn
    async def record_document_event(self, event: DocumentEvent) -> None:
        """A document's step changed: its run's event log says so (the live stream)."""
        await self.wake(await events.record_document_event(self.pool, event))

    @activity.defn
    async def record_document_events(self, batch: list[DocumentEvent]) -> None:
        """Several documents moved to the same step together (a batch of small ones)."""
        for event in batch:
            await self.wake(await events.record_document_event(self.pool, event))

    @activity.defn
    async def record_document_outcomes(self, batch: list[RecordOutcomeInput]) -> None:
        for inp in batch:
            await self.record_document_outcome(inp)

    @activity.defn
    async def record_document_outcome(self, inp: RecordOutcomeInput) -> None:
        o = inp.outcome
        if inp.generation_id is not None:
            await repository.record_derive_failure(
                self.pool,
                inp.generation_id,
                o.document_id,
                o.status.value,
                o.error_type or "Error",
                o.error or "",
            )
            return
        await repository.record_outcome(self.pool, o.document_id, o.status, o.error_type, o.error)
        event = DocumentEvent(document_id=o.document_id, status=o.status, error_type=o.error_type)
        await self.wake(await events.record_document_event(self.pool, event))

    @activity.defn
    async def requeue_documents(self, inp: RequeueInput) -> list[RequeuedDocument]:
        r = inp.request
        found = await repository.requeue_documents(
            self.pool,
            inp.run_id,
            r.document_ids,
            r.error_types,
            r.include_completed,
            include_queued=inp.include_queued,
        )
        return [RequeuedDocument(task=t, previous_status=s) for t, s in found]

    @activity.defn
    async def count_run_documents(self, run_id: str) -> RunCounts:
        counts = await repository.count_run_documents(self.pool, run_id)
        return RunCounts(
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            quarantined=counts.get("quarantined", 0),
        )

    @activity.defn
    async def cancel_queued_documents(self, run_id: str) -> int:
        # The run is being cancelled: nothing starts these documents meanwhile.
        queued = await events.queued_documents(self.pool, run_id)
        count = await repository.cancel_queued_documents(self.pool, run_id)
        for document_id in queued:
            event = DocumentEvent(
                document_id=document_id, status=DocStatus.CANCELLED, error_type="Cancelled"
            )
            await self.wake(await events.record_document_event(self.pool, event))
        return count

    def all(self) -> list:
        return [
            self.fetch_run_documents,
            self.fetch_requeued_documents,
            self.set_run_status,
            self.record_document_outcome,
            self.record_document_outcomes,
            self.record_document_event,
            self.record_document_events,
            self.cancel_queued_documents,
            self.requeue_documents,
            self.count_run_documents,
        ]
