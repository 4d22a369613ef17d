"""Figure 2: one 1-page PDF from upload to searchable (its chunks stored, its status
completed), one at a time, fresh bytes each time; the in-process time of the same file is
measured alongside so the difference is the orchestration's share. Each sample's path is
read back (the client's clock, Postgres, both workflows' histories: one machine, one clock)
and reported as median milliseconds per segment."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ONE_PAGE_PDF, median, pct, require, unique_bytes, upload
from bench.context import Ctx
from bench.history import critical_path, document_breakdown
from bench.stack import Stack
from docindex.ids import document_workflow_id, run_workflow_id

# Passes not timed, on each side: the first embeddings of a fresh model process take
# ~1.1 s where the fourth takes ~0.2 (one warm-up left two such samples in the service's
# 30, its p95; the in-process side had none and hid them in its median).
WARM_UP = 3


async def measure(ctx: Ctx) -> dict[str, Any]:
    source = require(ctx.corpus, ONE_PAGE_PDF)
    data = source.read_bytes()
    samples = 5 if ctx.quick else 10 * ctx.repeat
    await ctx.service()
    url = await ctx.api(DOCINDEX_MAX_CONCURRENT_DOCUMENTS=str(ctx.parallel))
    headers = await ctx.stack.api_headers("bench-latency")
    service: list[float] = []
    queue_wait: list[float] = []
    paths: list[list[tuple[str, float]]] = []
    warm_up: dict[str, list[float]] = {"service": [], "in_process": []}
    async with httpx.AsyncClient(base_url=url) as http:
        # The API loads its query model in the background when it starts (~5 s of CPU on
        # the cores being timed); a search waits for it.
        warm = await http.post(
            "/v1/search", json={"query": "warm-up"}, headers=headers, timeout=300
        )
        warm.raise_for_status()
        for i in range(WARM_UP + samples):
            sent = time.time()
            started = time.perf_counter()
            body = await upload(http, [(source.name, unique_bytes(data, source.name))], headers)
            answered = time.time()
            doc = body["documents"][0]["document_id"]
            status = await ctx.stack.wait_documents([doc], every_s=0.01)
            elapsed = time.perf_counter() - started
            seen = time.time()
            if status[doc] != "completed":
                raise RuntimeError(f"{source.name} ended {status[doc]}")
            if i < WARM_UP:
                warm_up["service"].append(elapsed)
                continue
            service.append(elapsed)
            b = await document_breakdown(
                ctx.stack.client, document_workflow_id(body["run_id"], doc)
            )
            queue_wait.append(sum(b.queue.values()))
            paths.append(
                await _path(ctx.stack, body["run_id"], doc, sent=sent, answered=answered, seen=seen)
            )

    indexer = await ctx.local()
    local: list[float] = []
    local_steps: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(WARM_UP + max(3, samples // 3)):
            path = Path(tmp) / source.name
            path.write_bytes(unique_bytes(data, source.name))
            run = await indexer.index([path], parallel=1)
            if i < WARM_UP:
                warm_up["in_process"].append(run.wall_s)
                continue
            local.append(run.wall_s)
            for step, secs in run.documents[0].seconds.items():
                local_steps.setdefault(step, []).append(secs)
    p50, p95 = pct(service, 50), pct(service, 95)
    segments = _segments(paths)
    return {
        "file": ONE_PAGE_PDF,
        "samples": len(service),
        "p50_s": p50,
        "p95_s": p95,
        "max_s": max(service),
        "samples_s": service,
        "in_process_s": local,
        "warm_up_s": warm_up,
        "in_process_p50_s": median(local),
        "queue_wait_p50_s": median(queue_wait),
        "goal_p50_s": 0.3,
        # Where one pass's time goes: each segment's median over the samples, in path order.
        "path_ms": segments,
        "paths": paths,
        "in_process_steps_ms": {
            step: median(ss) * 1000 for step, ss in sorted(local_steps.items())
        },
        "rows": [
            ("upload → searchable p50", f"{p50 * 1000:.0f} ms", "≤ 300 ms (issue #19)"),
            ("upload → searchable p95", f"{p95 * 1000:.0f} ms", ""),
            ("same file in-process (p50)", f"{median(local) * 1000:.0f} ms", ""),
            ("of which task-queue wait (p50)", f"{median(queue_wait) * 1000:.0f} ms", ""),
            (
                "path, median ms per segment",
                ", ".join(f"{k} {v:.0f}" for k, v in segments.items() if v >= 1),
                "",
            ),
        ],
    }


async def _path(
    stack: Stack, run_id: str, document_id: str, *, sent: float, answered: float, seen: float
) -> list[tuple[str, float]]:
    """One sample's path as (what ended, unix seconds): the client's send, the upload
    recorded in Postgres, the run's and the document's history, the run's events (the
    steps' local activities), the answer and the moment the bench saw the document
    completed. One clock: everything runs on this machine."""
    points = [("client sent", sent), ("API answered", answered), ("bench saw it", seen)]
    row = await stack.pool.fetchrow(
        "SELECT extract(epoch FROM created_at)::float8 AS t FROM documents"
        " WHERE document_id = $1::uuid",
        document_id,
    )
    points.append(("API recorded the upload", row["t"]))
    for e in await stack.pool.fetch(
        "SELECT extract(epoch FROM created_at)::float8 AS t, data FROM run_events"
        " WHERE run_id = $1::uuid AND document_id IS NOT NULL ORDER BY seq",
        run_id,
    ):
        data = json.loads(e["data"]) if isinstance(e["data"], str) else e["data"]
        points.append((f"event {data.get('step')} {data.get('status')}", e["t"]))
    points += await critical_path(
        stack.client, run_workflow_id(run_id), document_workflow_id(run_id, document_id)
    )
    return sorted(points, key=lambda p: p[1])


def _segments(paths: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Each segment (named for the point that ends it) as its median ms over the samples,
    ordered by where it falls on the path; the first point of each path starts the clock."""
    spans: dict[str, list[float]] = {}
    where: dict[str, list[int]] = {}
    for path in paths:
        for i, ((name, t), (_, before)) in enumerate(zip(path[1:], path, strict=False)):
            spans.setdefault(name, []).append((t - before) * 1000)
            where.setdefault(name, []).append(i)
    order = sorted(spans, key=lambda n: median([float(i) for i in where[n]]))
    return {n: median(spans[n]) for n in order}
