"""Figure 1: the corpus through the service (upload → every document searchable) against the
same steps in one process (``docindex index-local``), side by side, repetitions interleaved.
Worker memory (figure 8) is sampled during the service runs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench.common import PeakRss, corpus_files, cpu_seconds, median, upload
from bench.context import Ctx
from bench.history import Breakdown, document_breakdown
from docindex.ids import document_workflow_id

STEPS = ("parse", "metadata", "chunk", "enrich", "embed", "store", "bookkeeping")


async def service_pass(
    ctx: Ctx, files: list[tuple[str, bytes]], tenant: str, breakdown: bool = False
) -> dict[str, Any]:
    """Upload ``files`` as one run and wait until every document is terminal."""
    url = await ctx.api(DOCINDEX_MAX_CONCURRENT_DOCUMENTS=str(ctx.window))
    headers = await ctx.stack.api_headers(tenant)
    ctx.stack.forget_artifacts()
    async with httpx.AsyncClient(base_url=url) as http:
        started = time.perf_counter()
        body = await upload(http, files, headers)
        ids = [d["document_id"] for d in body["documents"]]
        status = await ctx.stack.wait_run_closed(body["run_id"], ids)
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
    run = await indexer.index(paths, parallel=ctx.window, cpu_slots=ctx.parallel)
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
        before = cpu_seconds(ctx.worker_pids())
        with PeakRss(ctx.worker_pids()) as peak:
            service.append(await service_pass(ctx, files, f"bench-overhead-{i}", breakdown=i == 0))
        service[-1]["cpu_s"] = _spent(before, cpu_seconds(ctx.worker_pids()))
        ctx.record_memory(peak.peaks)
        before = cpu_seconds(ctx.worker_pids())
        local.append(await local_pass(ctx, paths))
        local[-1]["cpu_s"] = _spent(before, cpu_seconds(ctx.worker_pids()))
        ctx.console.print(
            f"  overhead rep {i + 1}: service {service[-1]['wall_s']:.2f}s, "
            f"local {local[-1]['wall_s']:.2f}s"
        )
    ratios = [s["wall_s"] / lo["wall_s"] for s, lo in zip(service, local, strict=True)]
    ratio = median(ratios)
    # CPU seconds by process, median per process over the repetitions: where the service's
    # extra time goes when every process shares the same cores.
    service_cpu = _median_by_key([s["cpu_s"] for s in service])
    local_cpu = _median_by_key([lo["cpu_s"] for lo in local])
    cpu_ratio = (
        median(
            [
                sum(s["cpu_s"].values()) / sum(lo["cpu_s"].values())
                for s, lo in zip(service, local, strict=True)
            ]
        )
        if service_cpu and local_cpu
        else float("nan")
    )
    return {
        "documents": len(paths),
        "bytes": sum(len(d) for _, d in files),
        "parallel": ctx.parallel,
        "window": ctx.window,
        "service_wall_s": median([s["wall_s"] for s in service]),
        "local_wall_s": median([lo["wall_s"] for lo in local]),
        "ratio": ratio,
        "ratios": ratios,
        "goal_ratio": 1.05,
        "service_completed": service[0]["completed"],
        "local_completed": local[0]["completed"],
        "service_breakdown": {k: v for k, v in service[0].items() if k not in ("wall_s", "cpu_s")},
        "local_step_s": local[0]["step_s"],
        "service_cpu_s": service_cpu,
        "local_cpu_s": local_cpu,
        "cpu_ratio": cpu_ratio,
        "rows": [
            ("documents (corpus)", f"{len(paths)}", ""),
            ("in flight / parsing at once, both sides", f"{ctx.window} / {ctx.parallel}", ""),
            ("service wall (median)", f"{median([s['wall_s'] for s in service]):.2f} s", ""),
            ("in-process wall (median)", f"{median([lo['wall_s'] for lo in local]):.2f} s", ""),
            ("ratio service / in-process", f"{ratio:.3f}", "≤ 1.05"),
            ("CPU seconds, service / in-process", f"{cpu_ratio:.3f}", ""),
            ("service CPU s by process (median)", _by_process(service_cpu), ""),
            ("in-process CPU s by process (median)", _by_process(local_cpu), ""),
        ],
    }


ORCHESTRATION = ("temporal", "workflow", "api", "postgres", "bench")


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before.get(k, 0.0), 2) for k in after if k in before}


def _median_by_key(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = set().union(*runs) if runs else set()
    return {k: round(median([r.get(k, 0.0) for r in runs]), 2) for k in sorted(keys)}


def _by_process(cpu: dict[str, float]) -> str:
    """Work first (workers), then what orchestrates and observes it."""
    order = sorted(cpu, key=lambda k: (k in ORCHESTRATION, k))
    return ", ".join(f"{k} {cpu[k]:.1f}" for k in order if cpu[k] >= 0.05) or "none"
