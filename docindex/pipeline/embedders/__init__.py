"""Embedders: ``local`` (sentence-transformers in-process) or ``voyage`` (Voyage AI)."""

from __future__ import annotations

import threading
from pathlib import Path

from docindex.config import Settings

from .base import Embedded, Embedder, RequestLimits, plan_batches

_cache: dict[tuple, Embedder] = {}
_lock = threading.Lock()


def build_embedder(settings: Settings) -> Embedder:
    """The configured embedder. A local model is loaded once per process (it takes
    seconds); a hosted one is only a client, built as configured each time."""
    if settings.embedder == "voyage":
        return _build(settings)
    key = (
        settings.embed_model,
        settings.embed_device,
        settings.embed_micro_batch,
        settings.embed_micro_batch_wait_ms,
    )
    with _lock:
        if key not in _cache:
            _cache[key] = _build(settings)
        return _cache[key]


def _voyage_limits(settings: Settings) -> RequestLimits | None:
    if settings.voyage_max_texts_per_request is None and (
        settings.voyage_max_tokens_per_request is None
    ):
        return None
    from .voyage import limits_for

    documented = limits_for(settings.voyage_model)
    return RequestLimits(
        max_texts=settings.voyage_max_texts_per_request or documented.max_texts,
        max_tokens=settings.voyage_max_tokens_per_request or documented.max_tokens,
    )


def _build(settings: Settings) -> Embedder:
    if settings.embedder == "voyage":
        from .voyage import VoyageEmbedder

        return VoyageEmbedder(
            api_key=settings.voyage_api_key.get_secret_value() if settings.voyage_api_key else "",
            model=settings.voyage_model,
            output_dimension=settings.voyage_output_dimension,
            base_url=settings.voyage_base_url,
            limits=_voyage_limits(settings),
        )
    from .local import LocalEmbedder

    return LocalEmbedder(
        Path(settings.embed_model) if settings.embed_model else None,
        settings.embed_device,
        batch_size=settings.embed_batch_size,
        max_batch=settings.embed_micro_batch,
        max_wait_s=(
            None
            if settings.embed_micro_batch_wait_ms is None
            else settings.embed_micro_batch_wait_ms / 1000
        ),
    )


__all__ = ["Embedded", "Embedder", "RequestLimits", "build_embedder", "plan_batches"]
