"""Tokens used per provider and model, and what they cost."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel


class Usage(BaseModel):
    """Tokens one step used with one model. Summed per document and per run."""

    provider: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0
    embedding_tokens: int = 0

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            provider=self.provider,
            model=self.model,
            requests=self.requests + other.requests,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            embedding_tokens=self.embedding_tokens + other.embedding_tokens,
        )


def combine(usages: Iterable[Usage]) -> dict[str, Usage]:
    """Sum usages by provider/model."""
    total: dict[str, Usage] = {}
    for usage in usages:
        total[usage.key] = total[usage.key] + usage if usage.key in total else usage
    return total


def cost_usd(usage: Usage, prices: Mapping[str, Mapping[str, float]]) -> float:
    """Estimated cost from a per-million-token price table; unknown models cost 0 (local
    models, or a model missing from the table, which is then worth adding)."""
    table = _prices_for(usage.model, prices)
    if not table:
        return 0.0
    tokens = {
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_write": usage.cache_write_tokens,
        "cache_read": usage.cache_read_tokens,
        "embedding": usage.embedding_tokens,
    }
    return sum(tokens[k] * table.get(k, 0.0) for k in tokens) / 1_000_000


def _prices_for(model: str, prices: Mapping[str, Mapping[str, float]]) -> Mapping[str, float]:
    # Stored model names may carry a dimension ("voyage-3.5@512") or a date suffix.
    base = model.split("@", 1)[0]
    for name in sorted(prices, key=len, reverse=True):
        if base == name or base.startswith(name + "-2") or base.startswith(name + "@"):
            return prices[name]
    return prices.get(base, {})
