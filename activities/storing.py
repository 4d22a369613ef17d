"""The store step, run by the workflow worker as a local activity in the workflow task that
received the vectors (no queue, no extra workflow task). A shell over
``docindex.steps.store``."""

from __future__ import annotations

from temporalio import activity

from docindex.steps.models import Stored, StoreInput
from docindex.steps.store import StoreSteps


class StoreActivities:
    def __init__(self, steps: StoreSteps) -> None:
        self.steps = steps

    @activity.defn
    async def store_document(self, inp: StoreInput) -> Stored:
        # A local activity cannot heartbeat: the workflow task's timeout and the local
        # activity's own start-to-close bound it instead.
        return await self.steps.store(inp)

    def all(self) -> list:
        return [self.store_document]
