"""The store step, run by the workflow worker as a local activity in the workflow task that
received the vectors (no queue, no extra workflow task): one document, or several small
ones. A shell over ``docindex.steps.store``; it also records the step's start and the
document's completion in its run's events."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from docindex.events import DocumentEvent
from docindex.models import DocStatus, Step
from docindex.repository import events
from docindex.steps.models import HandedBack, StoreBatchInput, Stored, StoredBatch, StoreInput
from docindex.steps.progress import Progress
from docindex.steps.store import StoreSteps

from .batching import run_steps
from .bookkeeping import Wake, no_webhooks


class StoreActivities:
    def __init__(self, steps: StoreSteps, wake: Wake = no_webhooks) -> None:
        self.steps = steps
        self.wake = wake

    @activity.defn
    async def store_document(self, inp: StoreInput) -> Stored:
        # A local activity cannot heartbeat: the workflow task's timeout and the local
        # activity's own start-to-close bound it instead.
        return await self._store(inp)

    @activity.defn
    async def store_documents(self, inp: StoreBatchInput) -> StoredBatch:
        """Several small documents, each in its own transaction: one that cannot be stored
        is handed back without holding up the others; Postgres being unreachable fails
        the step, which retries (a store is idempotent)."""
        items = {item.document_id: item for item in inp.items}
        stored, handed_back = await run_steps(self._store_one, items, _not_an_outage)
        return StoredBatch(stored=stored, handed_back=handed_back)

    async def _store_one(self, inp: StoreInput, progress: Progress) -> Stored:
        return await self._store(inp)

    async def _store(self, inp: StoreInput) -> Stored:
        await self._record(inp, DocStatus.RUNNING)
        stored = await self.steps.store(inp)
        # The store marked it completed; the event is written after that commit (a retry
        # after a crash in between stores again and writes it then).
        await self._record(inp, DocStatus.COMPLETED)
        return stored

    async def _record(self, inp: StoreInput, status: DocStatus) -> None:
        """The document's event in its run's log (a derive is in none). The step's start is
        written here rather than by a local activity of its own in the workflow: one marker
        and one workflow activation less per document; a retry writes it once."""
        if inp.derive:
            return
        event = DocumentEvent(
            document_id=inp.document_id, status=status, step=Step.STORE, pages_parsed=inp.pages
        )
        await self.wake(await events.record_document_event(self.steps.pool, event))

    def all(self) -> list:
        return [self.store_document, self.store_documents]


def _not_an_outage(exc: BaseException) -> HandedBack | None:
    if isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError,
    ):
        return None
    return HandedBack(error_type=type(exc).__name__, error=str(exc))
