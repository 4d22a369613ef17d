"""Figure 5: parsing. Pages per second of each PDF pipeline available here, in one process
over the corpus; and one big PDF through the service, parsed as page ranges by 1, 2 and 4
CPU worker processes (one range at a time each)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import httpx

from bench.common import BIG_PDF, corpus_files, median, require, unique_bytes, upload
from bench.context import Ctx
from bench.history import parse_span
from docindex.errors import DocumentError
from docindex.filetypes import DocumentKind, detect_kind
from docindex.ids import document_workflow_id
from docindex.pipeline.parsing import DocumentParser


def _throughput(parser: DocumentParser, files: list[tuple[str, bytes]]) -> dict[str, float]:
    pages = docs = 0
    seconds = 0.0
    for name, data in files:
        started = time.perf_counter()
        try:
            parsed = parser.parse(data, name)
        except DocumentError:
            continue  # scanned pages without OCR and the like: not part of the rate
        seconds += time.perf_counter() - started
        pages += parsed.pages or 1
        docs += 1
    return {"pages": pages, "documents": docs, "seconds": seconds, "pages_per_s": pages / seconds}


async def measure(ctx: Ctx) -> dict[str, Any]:
    files = [(p.name, p.read_bytes()) for p in corpus_files(ctx.corpus)]
    pdfs = [(n, d) for n, d in files if detect_kind(d, n) is DocumentKind.PDF]
    office = [(n, d) for n, d in files if detect_kind(d, n) is not DocumentKind.PDF]
    if ctx.quick:
        pdfs = [(n, d) for n, d in pdfs if len(d) < 300_000][:10]
    pipelines: dict[str, Any] = {}
    wanted = ["native", "standard"]
    for name in wanted:
        try:
            parser = await asyncio.to_thread(DocumentParser, name)
        except Exception as exc:  # standard needs layout models on disk
            pipelines[name] = {"unavailable": str(exc)[:160]}
            continue
        await asyncio.to_thread(parser.parse, pdfs[0][1], pdfs[0][0])  # warm-up
        runs = [await asyncio.to_thread(_throughput, parser, pdfs) for _ in range(ctx.repeat)]
        pipelines[name] = {**runs[0], "pages_per_s": median([r["pages_per_s"] for r in runs])}
    simple = await asyncio.to_thread(DocumentParser, "native")
    runs = [await asyncio.to_thread(_throughput, simple, office) for _ in range(ctx.repeat)]
    pipelines["simple (office/html)"] = {
        **runs[0],
        "pages_per_s": median([r["pages_per_s"] for r in runs]),
    }

    scaling = await _range_scaling(ctx)
    rows = [
        (
            f"{name} pages/s",
            f"{v['pages_per_s']:.1f} ({v['pages']} pages, {v['documents']} docs)"
            if "pages_per_s" in v
            else "unavailable (no layout models)",
            "",
        )
        for name, v in pipelines.items()
    ]
    base = scaling.get("1", {}).get("parse_s")
    for workers, v in scaling.items():
        speedup = f", x{base / v['parse_s']:.2f}" if base else ""
        rows.append(
            (
                f"{v['pages']}-page PDF, {workers} CPU worker(s)",
                f"parse {v['parse_s']:.1f} s ({v['pages'] / v['parse_s']:.1f} pages/s{speedup})",
                "",
            )
        )
    return {"pipelines": pipelines, "range_scaling": scaling, "cores": os.cpu_count(), "rows": rows}


async def _range_scaling(ctx: Ctx) -> dict[str, Any]:
    source = require(ctx.corpus, BIG_PDF)
    data = source.read_bytes()
    counts = (1, 2) if ctx.quick else (1, 2, 4)
    stack = ctx.stack
    # Only this figure's workers poll the queues while it runs.
    stack.stop(ctx._workers)
    ctx._workers = []
    base = await stack.start_workers(("workflow", "gpu", "hosted"))
    # Split although the native pipeline parses a PDF this size whole by default: this
    # figure is how ranges of one document spread over CPU workers.
    url = await ctx.api(
        DOCINDEX_MAX_CONCURRENT_DOCUMENTS=str(ctx.parallel),
        DOCINDEX_SPLIT_PDF_PAGES="20",
        DOCINDEX_RANGE_PAGES="20",
    )
    headers = await stack.api_headers(f"bench-parse-{uuid.uuid4().hex[:6]}")
    out: dict[str, Any] = {}
    try:
        for n in counts:
            cpu = await stack.start_workers(["cpu"] * n, DOCINDEX_CPU_WORKER_CONCURRENCY="1")
            spans: list[float] = []
            walls: list[float] = []
            pages = 0
            async with httpx.AsyncClient(base_url=url) as http:
                for _ in range(1 if ctx.quick else ctx.repeat):
                    started = time.perf_counter()
                    body = await upload(
                        http, [(source.name, unique_bytes(data, source.name))], headers
                    )
                    doc = body["documents"][0]["document_id"]
                    status = await stack.wait_documents([doc], every_s=0.1)
                    walls.append(time.perf_counter() - started)
                    if status[doc] != "completed":
                        raise RuntimeError(f"{source.name} ended {status[doc]}")
                    spans.append(
                        await parse_span(stack.client, document_workflow_id(body["run_id"], doc))
                    )
                    pages = await stack.pool.fetchval(
                        "SELECT pages FROM documents WHERE document_id = $1", uuid.UUID(doc)
                    )
            out[str(n)] = {"parse_s": median(spans), "wall_s": median(walls), "pages": pages}
            stack.stop(cpu)
    finally:
        stack.stop(base)
    return out
