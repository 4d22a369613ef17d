"""Embedding activity: on the GPU queue for a local model, on a rate-limited queue for a
hosted API. A shell over ``docindex.steps.embed``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from docindex.steps.models import Embedded, EmbedInput

from .errors import provider_errors_are_typed
from .heartbeat import run_step

if TYPE_CHECKING:
    from docindex.steps.embed import EmbedSteps


class EmbeddingActivities:
    def __init__(self, steps: EmbedSteps) -> None:
        self.steps = steps

    @activity.defn
    @provider_errors_are_typed
    async def embed_chunks(self, inp: EmbedInput) -> Embedded:
        return await run_step(self.steps.embed, inp)

    def all(self) -> list:
        return [self.embed_chunks]
