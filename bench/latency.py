"""Figure 2: one 1-page PDF from upload to searchable (its chunks stored, its status
completed), one at a time, fresh bytes each time; the in-process time of the same file is
measured alongside so the difference is the orchestration's share."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ONE_PAGE_PDF, median, pct, require, unique_bytes, upload
from bench.context import Ctx
from bench.history import document_breakdown
from docindex.ids import document_workflow_id


async def measure(ctx: Ctx) -> dict[str, Any]:
    source = require(ctx.corpus, ONE_PAGE_PDF)
    data = source.read_bytes()
    samples = 5 if ctx.quick else 10 * ctx.repeat
    await ctx.service()
    url = await ctx.api(DOCINDEX_MAX_CONCURRENT_DOCUMENTS=str(ctx.parallel))
    headers = await ctx.stack.api_headers("bench-latency")
    service: list[float] = []
    queue_wait: list[float] = []
    async with httpx.AsyncClient(base_url=url) as http:
        for i in range(samples + 1):
            started = time.perf_counter()
            body = await upload(http, [(source.name, unique_bytes(data, source.name))], headers)
            doc = body["documents"][0]["document_id"]
            status = await ctx.stack.wait_documents([doc], every_s=0.01)
            elapsed = time.perf_counter() - started
            if status[doc] != "completed":
                raise RuntimeError(f"{source.name} ended {status[doc]}")
            if i == 0:
                continue  # warm-up
            service.append(elapsed)
            b = await document_breakdown(
                ctx.stack.client, document_workflow_id(body["run_id"], doc)
            )
            queue_wait.append(sum(b.queue.values()))

    indexer = await ctx.local()
    local: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(3, samples // 3)):
            path = Path(tmp) / source.name
            path.write_bytes(unique_bytes(data, source.name))
            run = await indexer.index([path], parallel=1)
            local.append(run.wall_s)
    p50, p95 = pct(service, 50), pct(service, 95)
    return {
        "file": ONE_PAGE_PDF,
        "samples": len(service),
        "p50_s": p50,
        "p95_s": p95,
        "max_s": max(service),
        "in_process_p50_s": median(local),
        "queue_wait_p50_s": median(queue_wait),
        "goal_p50_s": 1.0,
        "rows": [
            ("upload → searchable p50", f"{p50 * 1000:.0f} ms", "≤ 1000 ms"),
            ("upload → searchable p95", f"{p95 * 1000:.0f} ms", ""),
            ("same file in-process (p50)", f"{median(local) * 1000:.0f} ms", ""),
            ("of which task-queue wait (p50)", f"{median(queue_wait) * 1000:.0f} ms", ""),
        ],
    }
