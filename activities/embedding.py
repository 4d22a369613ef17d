"""Embedding activity: on the GPU queue for a local model, on a rate-limited queue for a
hosted API; one document's chunks, or several small documents' at once. A shell over
``docindex.steps.embed``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from docindex.errors import DocumentError, ProviderError
from docindex.steps.models import (
    EmbedBatchInput,
    Embedded,
    EmbeddedBatch,
    EmbedInput,
    HandedBack,
)

from .batching import run_steps
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

    @activity.defn
    @provider_errors_are_typed
    async def embed_documents(self, inp: EmbedBatchInput) -> EmbeddedBatch:
        """Several small documents at once: the embedder's micro-batcher takes their chunks
        together. A rate limit or an outage retries the whole step (vectors already saved
        are reused); a request the provider refuses for good hands that document back."""
        embedded, handed_back = await run_steps(self.steps.embed, inp.items, _refused)
        return EmbeddedBatch(embedded=embedded, handed_back=handed_back)

    def all(self) -> list:
        return [self.embed_chunks, self.embed_documents]


def _refused(exc: BaseException) -> HandedBack | None:
    if isinstance(exc, DocumentError) or (isinstance(exc, ProviderError) and not exc.retryable):
        return HandedBack(error_type=exc.error_type, error=str(exc))
    return None
