"""LLM-queue activities: describe a document, and situate its chunks. Shells over
``docindex.steps.enrich``.

This queue is rate-limited for all workers together (Temporal's task-queue activity rate),
and each activity makes a bounded number of calls, so the account's rate holds however
many workers run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from docindex.steps.models import ContextInput, Contexts, Enriched, EnrichInput

from .errors import provider_errors_are_typed
from .heartbeat import run_step

if TYPE_CHECKING:
    from docindex.steps.enrich import EnrichSteps


class EnrichmentActivities:
    def __init__(self, steps: EnrichSteps) -> None:
        self.steps = steps

    @activity.defn
    @provider_errors_are_typed
    async def enrich_document(self, inp: EnrichInput) -> Enriched:
        return await run_step(self.steps.describe, inp)

    @activity.defn
    @provider_errors_are_typed
    async def contextualize_chunks(self, inp: ContextInput) -> Contexts:
        return await run_step(self.steps.contextualize, inp)

    def all(self) -> list:
        return [self.enrich_document, self.contextualize_chunks]
