"""Figure 3: the upload API alone, 1 MB files at 1, 10 and 50 concurrent requests, and big
files (64 MiB, 2 at a time) for what the API spends per MB and holds in memory; then 50 at
a time again while a run indexes on the same cores.

For the first levels the API under test starts its runs on a task queue no worker polls, so
indexing does not compete with it for the CPU; the runs are terminated and deleted
afterwards. The last level is the opposite: the workers are busy with a run (the corpus's
documents when it is there, else 500 synthetic PDFs and notes as ``make load`` makes) and
index what the level uploads too, as a production API beside its workers would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from bench.common import (
    MissingInput,
    PeakRss,
    UploadRefused,
    corpus_files,
    cpu_seconds,
    gather_limited,
    load_run_files,
    pct,
    proc_status_bytes,
    synthetic_pdf,
    upload,
)
from bench.context import Ctx
from bench.stack import TERMINAL_RUN
from docindex.ids import run_workflow_id

CONCURRENCY = (1, 10, 50)
SIZE = 1024 * 1024
BIG_SIZE = 64 * 1024 * 1024
BIG_CONCURRENCY = 2
BUSY_CONCURRENCY = 50
BUSY_REQUESTS = 150
# The background run without the corpus: what ``make load`` indexes.
BUSY_SYNTHETIC_DOCUMENTS = 500


async def measure(ctx: Ctx) -> dict[str, Any]:
    env = {"DOCINDEX_WORKFLOW_TASK_QUEUE": f"bench-idle-{uuid.uuid4().hex[:6]}"}
    url = await ctx.api(**env)
    pids = {"api": ctx.api_pid(**env)}
    headers = await ctx.stack.api_headers("bench-uploads")
    levels: dict[str, Any] = {}
    runs: list[str] = []
    seed = 10_000
    limits = httpx.Limits(max_connections=max(CONCURRENCY), max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        # Warm-up: the first request pays imports and connection set-up, and a search waits
        # for the query model the API loads in the background when it starts (seconds of
        # CPU that would otherwise fall into the first levels).
        await upload(http, [("warmup.pdf", synthetic_pdf(seed, SIZE))], headers)
        warm = await http.post(
            "/v1/search", json={"query": "warm-up"}, headers=headers, timeout=300
        )
        warm.raise_for_status()
        for c in CONCURRENCY:
            n = max(c, 5) if ctx.quick else max(3 * c, 30) * ctx.repeat
            files = [synthetic_pdf(seed + i, SIZE) for i in range(1, n + 1)]
            seed += n + 1
            latencies: list[float] = []
            errors: dict[str, int] = {}
            timed = [
                _timed_upload(http, headers, "upload.pdf", data, 120, latencies, errors, runs)
                for data in files
            ]
            cpu_before = cpu_seconds(pids, ctx.stack.root)
            started = time.perf_counter()
            await gather_limited(c, timed)
            wall = time.perf_counter() - started
            cpu_after = cpu_seconds(pids, ctx.stack.root)
            levels[str(c)] = {
                "requests": n,
                **_answers(latencies, errors),
                "uploads_per_s": n / wall,
                "mb_per_s": n * SIZE / wall / 2**20,
                # Milliseconds of CPU per upload of each process: the API, the Temporal
                # server (the run's start), Postgres, and this one (the client).
                "cpu_ms_per_upload": {
                    k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / n for k in cpu_after
                },
            }
        big = await _big_files(ctx, http, headers, pids, runs, seed)
    await _clean_up(ctx, runs)
    busy = await _while_indexing(ctx, seed + 1_000)
    return {
        "file_bytes": SIZE,
        "levels": levels,
        "big": big,
        "while_indexing": busy,
        "rows": [
            (
                f"{c} concurrent: p50/p95/p99",
                f"{v['p50_ms']:.0f}/{v['p95_ms']:.0f}/{v['p99_ms']:.0f} ms, "
                f"{v['errors']} errors, {v['mb_per_s']:.1f} MB/s",
                "0 errors",
            )
            for c, v in levels.items()
        ]
        + [
            (
                f"{c} concurrent: CPU per upload",
                ", ".join(f"{k} {ms:.1f}" for k, ms in v["cpu_ms_per_upload"].items()) + " ms",
                "",
            )
            for c, v in levels.items()
        ]
        + [
            (
                f"{BIG_SIZE // 2**20} MiB files, {BIG_CONCURRENCY} at a time",
                f"p50 {big['p50_ms']:.0f} ms, {big['mb_per_s']:.0f} MB/s, API "
                f"{big['cpu_ms_per_mb']['api']:.2f} ms CPU per MB, API resident "
                f"{big['api_rss_before_mb']:.0f} MB before, {big['api_peak_rss_mb']:.0f} at "
                f"its peak, {big['errors']} errors",
                "0 errors",
            ),
            (
                f"{BUSY_CONCURRENCY} concurrent while a run of {busy['run_documents']} "
                "indexes: p50/p95/p99",
                f"{busy['p50_ms']:.0f}/{busy['p95_ms']:.0f}/{busy['p99_ms']:.0f} ms, "
                f"{busy['errors']} errors, run open throughout: {busy['run_open_throughout']}",
                "0 errors",
            ),
        ],
    }


async def _big_files(
    ctx: Ctx,
    http: httpx.AsyncClient,
    headers: dict[str, str],
    pids: dict[str, int],
    runs: list[str],
    seed: int,
) -> dict[str, Any]:
    """Big uploads, a few at a time: the API's CPU per MB (hashing, format checks, the
    blob store's writes) and its peak memory while they stream."""
    n = 2 if ctx.quick else 3 * ctx.repeat
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def one(i: int) -> None:
        data = synthetic_pdf(seed + i, BIG_SIZE)  # made as it is sent: 64 MiB each
        await _timed_upload(http, headers, "big.pdf", data, 300, latencies, errors, runs)

    resident_before = proc_status_bytes(pids["api"], "VmRSS:")
    cpu_before = cpu_seconds(pids, ctx.stack.root)
    started = time.perf_counter()
    with PeakRss(pids) as peak:
        await gather_limited(BIG_CONCURRENCY, [one(i) for i in range(1, n + 1)])
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(pids, ctx.stack.root)
    megabytes = n * BIG_SIZE / 2**20
    return {
        "requests": n,
        "file_bytes": BIG_SIZE,
        "concurrency": BIG_CONCURRENCY,
        "p50_ms": pct(latencies, 50) * 1000,
        "mb_per_s": megabytes / wall,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        # Of each process, the client's included: it builds and sends the bodies.
        "cpu_ms_per_mb": {
            k: (cpu_after[k] - cpu_before.get(k, 0.0)) * 1000 / megabytes for k in cpu_after
        },
        "api_peak_rss_mb": peak.peaks.get("api", 0) / 2**20,
        "api_rss_before_mb": resident_before / 2**20,
    }


async def _while_indexing(ctx: Ctx, seed: int) -> dict[str, Any]:
    """50 uploads at a time while the workers index a run on the same cores, and index
    these uploads too: whether indexing starves the API (the workers that parse and embed
    run at a lower priority). Every document of both ends terminal before it returns."""
    await ctx.service()
    url = await ctx.api()
    pids = ctx.worker_pids() | {"api": ctx.api_pid()}
    headers = await ctx.stack.api_headers(f"bench-busy-{uuid.uuid4().hex[:6]}")
    background = _background(ctx, seed)
    ctx.stack.forget_artifacts()  # parsed, chunked and embedded afresh, not from a cache
    n = 10 if ctx.quick else BUSY_REQUESTS
    files = [synthetic_pdf(seed + 20_000 + i, SIZE) for i in range(n)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    runs: list[str] = []
    limits = httpx.Limits(max_connections=BUSY_CONCURRENCY, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        body = await upload(http, background, headers)
        run_id, documents = body["run_id"], [d["document_id"] for d in body["documents"]]
        # Until the workers are at it: the first document has left the queue.
        await _until_started(ctx, documents)
        load_before = list(os.getloadavg())
        cpu_before = cpu_seconds(pids, ctx.stack.root)
        started = time.perf_counter()
        await gather_limited(
            BUSY_CONCURRENCY,
            [
                _timed_upload(http, headers, "upload.pdf", data, 300, latencies, errors, runs)
                for data in files
            ],
        )
        wall = time.perf_counter() - started
        cpu_after = cpu_seconds(pids, ctx.stack.root)
        still_open = (
            await ctx.stack.pool.fetchval(
                "SELECT status FROM runs WHERE run_id = $1", uuid.UUID(run_id)
            )
            not in TERMINAL_RUN
        )
    uploaded = [
        str(r["document_id"])
        for r in await ctx.stack.pool.fetch(
            "SELECT document_id FROM documents WHERE run_id = ANY($1::uuid[])",
            [uuid.UUID(r) for r in runs],
        )
    ]
    status = await ctx.stack.wait_documents(documents + uploaded, timeout_s=3600, every_s=0.5)
    return {
        "requests": n,
        "concurrency": BUSY_CONCURRENCY,
        "run_documents": len(documents),
        "run_open_throughout": still_open,
        **_answers(latencies, errors),
        "uploads_per_s": n / wall,
        "load_before": load_before,
        "cpu_s_per_s": {k: (cpu_after[k] - cpu_before.get(k, 0.0)) / wall for k in cpu_after},
        "statuses": dict(Counter(status.values())),
    }


def _answers(latencies: list[float], errors: dict[str, int]) -> dict[str, Any]:
    """A level's latency percentiles (ms) and its errors by kind."""
    return {
        "p50_ms": pct(latencies, 50) * 1000,
        "p95_ms": pct(latencies, 95) * 1000,
        "p99_ms": pct(latencies, 99) * 1000,
        "errors": sum(errors.values()),
        "error_kinds": errors,
    }


def _background(ctx: Ctx, seed: int) -> list[tuple[str, bytes]]:
    """The run the workers index meanwhile: the corpus, else what ``make load`` indexes."""
    try:
        return [(p.name, p.read_bytes()) for p in corpus_files(ctx.corpus)]
    except MissingInput:
        return load_run_files(seed, 50 if ctx.quick else BUSY_SYNTHETIC_DOCUMENTS)


async def _until_started(ctx: Ctx, documents: list[str], timeout_s: float = 120.0) -> None:
    ids = [uuid.UUID(d) for d in documents]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await ctx.stack.pool.fetchval(
            "SELECT count(*) FROM documents WHERE document_id = ANY($1::uuid[])"
            " AND status <> 'queued'",
            ids,
        ):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the run's documents did not start")


async def _timed_upload(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    data: bytes,
    timeout_s: float,
    latencies: list[float],
    errors: dict[str, int],
    runs: list[str],
) -> None:
    """One upload: its latency, or its error by kind; the run it started, to clean up."""
    started = time.perf_counter()
    try:
        body = await upload(http, [(name, data)], headers, timeout_s=timeout_s)
        latencies.append(time.perf_counter() - started)
        if body.get("run_id"):
            runs.append(body["run_id"])
    except UploadRefused as exc:
        errors[str(exc.status)] = errors.get(str(exc.status), 0) + 1
    except httpx.HTTPError as exc:
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1


async def _clean_up(ctx: Ctx, runs: list[str]) -> None:
    """Nothing polls those runs' queue: terminate them, and forget them in Postgres so the
    API's reconciler leaves them alone."""

    async def terminate(run_id: str) -> None:
        with contextlib.suppress(Exception):
            await ctx.stack.client.get_workflow_handle(run_workflow_id(run_id)).terminate(
                reason="benchmark clean-up"
            )

    await asyncio.gather(*(terminate(r) for r in runs))
    await ctx.stack.pool.execute(
        "DELETE FROM runs WHERE run_id = ANY($1::uuid[])", [uuid.UUID(r) for r in runs]
    )
