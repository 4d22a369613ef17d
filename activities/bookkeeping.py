"""Small database activities the workflows use to page documents and record outcomes.

They run on the workflow task queue: they are quick, and must not wait behind parsing.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from docindex import repository
from docindex.models import (
    DocumentTask,
    FetchDocumentsInput,
    RecordOutcomeInput,
    RequeuedDocument,
    RequeueInput,
    RunCounts,
    RunStatusUpdate,
)
from workflows import names


class Bookkeeping:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn(name=names.FETCH_RUN_DOCUMENTS)
    async def fetch_run_documents(self, inp: FetchDocumentsInput) -> list[DocumentTask]:
        return await repository.fetch_documents(self.pool, inp.run_id, inp.after_seq, inp.limit)

    @activity.defn(name=names.SET_RUN_STATUS)
    async def set_run_status(self, inp: RunStatusUpdate) -> None:
        await repository.set_run_status(
            self.pool,
            inp.run_id,
            inp.status,
            completed=inp.completed,
            failed=inp.failed,
            cancelled=inp.cancelled,
        )

    @activity.defn(name=names.RECORD_DOCUMENT_OUTCOME)
    async def record_document_outcome(self, inp: RecordOutcomeInput) -> None:
        o = inp.outcome
        await repository.record_outcome(self.pool, o.document_id, o.status, o.error_type, o.error)

    @activity.defn(name=names.REQUEUE_DOCUMENTS)
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

    @activity.defn(name=names.COUNT_RUN_DOCUMENTS)
    async def count_run_documents(self, run_id: str) -> RunCounts:
        counts = await repository.count_run_documents(self.pool, run_id)
        return RunCounts(
            completed=counts.get("completed", 0),
            failed=counts.get("failed", 0),
            cancelled=counts.get("cancelled", 0),
            quarantined=counts.get("quarantined", 0),
        )

    @activity.defn(name=names.CANCEL_QUEUED_DOCUMENTS)
    async def cancel_queued_documents(self, run_id: str) -> int:
        return await repository.cancel_queued_documents(self.pool, run_id)

    def all(self) -> list:
        return [
            self.fetch_run_documents,
            self.set_run_status,
            self.record_document_outcome,
            self.cancel_queued_documents,
            self.requeue_documents,
            self.count_run_documents,
        ]
