"""The store step, run by the workflow worker as a local activity in the workflow task that
received the vectors (no queue, no extra workflow task). A shell over
``docindex.steps.store``; it also records the step's start and the document's completion in
its run's events."""

from __future__ import annotations

from temporalio import activity

from docindex.events import DocumentEvent
from docindex.models import DocStatus, Step
from docindex.repository import events
from docindex.steps.models import Stored, StoreInput
from docindex.steps.store import StoreSteps

from .bookkeeping import Wake, no_webhooks


class StoreActivities:
    def __init__(self, steps: StoreSteps, wake: Wake = no_webhooks) -> None:
        self.steps = steps
        self.wake = wake

    @activity.defn
    async def store_document(self, inp: StoreInput) -> Stored:
        # A local activity cannot heartbeat: the workflow task's timeout and the local
        # activity's own start-to-close bound it instead.
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
        return [self.store_document]
