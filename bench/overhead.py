"""Figure 1: the corpus through the service (upload → every document searchable) against the
same steps in one process (``docindex index-local``), side by side, repetitions interleaved.
Worker memory (figure 8) is sampled during the service runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import RssSampler, corpus_files, median, upload
from bench.context import Ctx
from bench.history import Breakdown, document_breakdown
from docindex.ids import document_workflow_id

STEPS = ("parse", "metadata", "chunk", "enrich", "embed", "store", "bookkeeping")


async def service_pass(
    ctx: Ctx, files: list[tuple[str, bytes]], tenant: str, breakdown: bool = False
) -> dict[str, Any]:
    """Upload ``files`` as one run and wait until every document is terminal."""
    url = await ctx.api(DOCINDEX_MAX_CONCURRENT_DOCUMENTS=str(ctx.parallel))
    headers = await ctx.stack.api_headers(tenant)
    ctx.stack.forget_artifacts()
    async with httpx.AsyncClient(base_url=url) as http:
        started = time.perf_counter()
        body = await upload(http, files, headers)
        ids = [d["document_id"] for d in body["documents"]]
        status = await ctx.stack.wait_documents(ids)
        wall = time.perf_counter() - started
    out: dict[str, Any] = {
        "wall_s": wall,
        "completed": sum(s == "completed" for s in status.values()),
        "failed": sum(s != "completed" for s in status.values()),
    }
    if breakdown:
        total = Breakdown()
        parts = await asyncio.gather(
            *(
                document_breakdown(ctx.stack.client, document_workflow_id(body["run_id"], i))
                for i in ids
            )
        )
        for part in parts:
            total.add(part)
        out["activity_s"] = {k: round(total.run.get(k, 0.0), 3) for k in STEPS}
        out["queue_wait_s"] = {k: round(total.queue.get(k, 0.0), 3) for k in STEPS}
        out["activities"] = total.activities
        out["document_workflow_s"] = round(total.wall, 3)
    return out


async def local_pass(ctx: Ctx, paths: list[Any]) -> dict[str, Any]:
    indexer = await ctx.local()
    ctx.stack.forget_artifacts()
    run = await indexer.index(paths, parallel=ctx.parallel)
    return {
        "wall_s": run.wall_s,
        "completed": sum(d.status == "completed" for d in run.documents),
        "failed": sum(d.status != "completed" for d in run.documents),
        "step_s": {k: round(v, 3) for k, v in run.step_totals().items()},
    }


async def measure(ctx: Ctx) -> dict[str, Any]:
    paths = corpus_files(ctx.corpus)
    if ctx.quick:  # a handful of small documents of each kind
        paths = [p for p in paths if p.stat().st_size < 200_000][:8]
    files = [(p.name, p.read_bytes()) for p in paths]
    await ctx.service()
    await ctx.local()
    # One unmeasured pass each over a few small files: imports, model warm-up, the first
    # HNSW index (a full corpus pass would double this figure's time for nothing).
    small = [p for p in paths if p.stat().st_size < 100_000][:4]
    await service_pass(ctx, [(p.name, p.read_bytes()) for p in small], "bench-warmup")
    await local_pass(ctx, small)

    service: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    for i in range(ctx.repeat):
        # Interleaved, so drift on a shared machine hits both sides alike.
        with RssSampler(ctx.worker_pids()) as sampler:
            service.append(await service_pass(ctx, files, f"bench-overhead-{i}", breakdown=i == 0))
        ctx.record_memory(sampler.peaks)
        local.append(await local_pass(ctx, paths))
        ctx.console.print(
            f"  overhead rep {i + 1}: service {service[-1]['wall_s']:.2f}s, "
            f"local {local[-1]['wall_s']:.2f}s"
        )
    ratios = [s["wall_s"] / lo["wall_s"] for s, lo in zip(service, local, strict=True)]
    ratio = median(ratios)
    return {
        "documents": len(paths),
        "bytes": sum(len(d) for _, d in files),
        "parallel": ctx.parallel,
        "service_wall_s": median([s["wall_s"] for s in service]),
        "local_wall_s": median([lo["wall_s"] for lo in local]),
        "ratio": ratio,
        "ratios": ratios,
        "goal_ratio": 1.05,
        "service_completed": service[0]["completed"],
        "local_completed": local[0]["completed"],
        "service_breakdown": {k: v for k, v in service[0].items() if k not in ("wall_s",)},
        "local_step_s": local[0]["step_s"],
        "rows": [
            ("documents (corpus)", f"{len(paths)}", ""),
            ("service wall (median)", f"{median([s['wall_s'] for s in service]):.2f} s", ""),
            ("in-process wall (median)", f"{median([lo['wall_s'] for lo in local]):.2f} s", ""),
            ("ratio service / in-process", f"{ratio:.3f}", "≤ 1.05"),
        ],
    }
