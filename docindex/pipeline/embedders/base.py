"""One interface for every embedder; batching by text count and token budget, written once.

A provider states its per-request limits and how to call its API; ``embed_documents``
splits the texts to fit and adds up what the provider reports as used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RequestLimits:
    max_texts: int
    max_tokens: int


@dataclass
class Embedded:
    vectors: np.ndarray
    tokens: int
    requests: int


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (a token per 3 characters) used only to size batches:
    the providers' tokenizers live on a model hub, and the real count comes back in usage."""
    return len(text) // 3 + 1


def plan_batches(texts: Sequence[str], limits: RequestLimits) -> list[range]:
    """Consecutive index ranges whose texts fit one request each."""
    batches: list[range] = []
    start, tokens = 0, 0
    for i, text in enumerate(texts):
        cost = estimate_tokens(text)
        if i > start and (i - start >= limits.max_texts or tokens + cost > limits.max_tokens):
            batches.append(range(start, i))
            start, tokens = i, 0
        tokens += cost
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


class Embedder(ABC):
    provider: str
    model: str
    """What is stored with each chunk: the model and, when it is not the model's default,
    the dimension; search only compares vectors of the same ``model``."""
    dimension: int
    limits: RequestLimits

    async def embed_documents(self, texts: Sequence[str]) -> Embedded:
        if not texts:
            return Embedded(np.zeros((0, self.dimension), dtype=np.float32), 0, 0)
        parts: list[np.ndarray] = []
        tokens = 0
        batches = plan_batches(texts, self.limits)
        for batch in batches:
            vectors, used = await self._embed([texts[i] for i in batch], "document")
            parts.append(vectors)
            tokens += used
        return Embedded(np.vstack(parts).astype(np.float32), tokens, len(batches))

    async def embed_query(self, text: str) -> np.ndarray:
        vectors, _ = await self._embed([text], "query")
        return vectors[0].astype(np.float32)

    @abstractmethod
    async def _embed(self, texts: list[str], input_type: str) -> tuple[np.ndarray, int]:
        """Embed one request's worth of texts; return vectors and tokens used."""
