"""Figure 8: peak resident memory of each worker kind (and the API), each a process of its
own with its children: the kernel's high-water mark over the corpus runs of figure 1 (or, if
that figure did not run, over one corpus run made here)."""

from __future__ import annotations

from typing import Any

from bench.common import PeakRss, corpus_files
from bench.context import Ctx
from bench.overhead import service_pass


async def measure(ctx: Ctx) -> dict[str, Any]:
    source = "figure 1 corpus runs"
    if not ctx.memory:
        source = "one corpus run"
        paths = corpus_files(ctx.corpus)
        if ctx.quick:
            paths = [p for p in paths if p.stat().st_size < 200_000][:8]
        await ctx.service()
        files = [(p.name, p.read_bytes()) for p in paths]
        await service_pass(ctx, files, "bench-memory-warmup")
        with PeakRss(ctx.worker_pids()) as peak:
            await service_pass(ctx, files, "bench-memory")
        ctx.record_memory(peak.peaks)
    mib = {k: round(v / 2**20) for k, v in sorted(ctx.memory.items())}
    return {
        "peak_rss_mib": mib,
        "sampled_during": source,
        "rows": [(f"{k} peak RSS", f"{v} MiB", "") for k, v in mib.items()],
    }
