"""Figure 7: search over 100k stored chunks with the HNSW index, through the same SQL the API
runs (``repository.search_chunks``): p50/p95 latency, and recall@10 against exact search.

Vectors are synthetic but not uniform noise (on which no ANN index does well, nor any real
embedding looks like): unit vectors around a few hundred cluster centres, as embeddings of
documents on many topics are."""

from __future__ import annotations

import time
import uuid
from typing import Any

import numpy as np

from bench.common import pct
from bench.context import Ctx
from docindex import repository

MODEL = "bench-synthetic"
DIM = 384
TOP_K = 10


def _vectors(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    v = centres[picks] + rng.normal(scale=0.6 / np.sqrt(DIM), size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


async def measure(ctx: Ctx) -> dict[str, Any]:
    n = 10_000 if ctx.quick else 100_000
    queries = 50 if ctx.quick else 200
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(300, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stored = _vectors(rng, n, centres)
    ids = [uuid.uuid4() for _ in range(n)]
    pool = ctx.stack.pool

    started = time.perf_counter()
    run_id = uuid.uuid4()
    docs = [uuid.uuid4() for _ in range(max(1, n // 1000))]
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO runs (run_id, workflow_id, document_count, status) "
            "VALUES ($1, 'bench-search', $2, 'completed')",
            run_id,
            len(docs),
        )
        await conn.executemany(
            "INSERT INTO documents (document_id, run_id, seq, filename, sha256, size_bytes, "
            "blob_key, status) VALUES ($1, $2, $3, $4, 'synthetic', 0, 'none', 'completed')",
            [(d, run_id, i, f"synthetic-{i}") for i, d in enumerate(docs)],
        )
        await conn.copy_records_to_table(
            "chunks",
            columns=[
                "chunk_id",
                "document_id",
                "ordinal",
                "text",
                "embed_text",
                "model",
                "dimension",
                "embedding",
            ],
            records=(
                (ids[i], docs[i % len(docs)], i, "synthetic", "synthetic", MODEL, DIM, stored[i])
                for i in range(n)
            ),
        )
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    name = repository.vector_index_name(MODEL, DIM)
    async with pool.acquire() as conn:
        # Enough memory to build the graph in RAM (pgvector warns and slows down otherwise).
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(
            f"""CREATE INDEX IF NOT EXISTS {name} ON chunks
                USING hnsw ((embedding::vector({DIM})) vector_cosine_ops)
                WHERE model = '{MODEL}'"""
        )
        await conn.execute("ANALYZE chunks")
    index_s = time.perf_counter() - started
    plan = await repository.explain_search(pool, DIM, MODEL)

    probes = _vectors(rng, queries, centres)
    latencies: list[float] = []
    recalls: list[float] = []
    for q in probes:
        t = time.perf_counter()
        rows = await repository.search_chunks(pool, q, MODEL, TOP_K)
        latencies.append(time.perf_counter() - t)
        exact = {ids[i] for i in np.argsort(-(stored @ q))[:TOP_K]}
        recalls.append(len(exact & {uuid.UUID(r.chunk_id) for r in rows}) / TOP_K)
    await pool.execute("DELETE FROM runs WHERE run_id = $1", run_id)  # cascades
    await pool.execute(f"DROP INDEX IF EXISTS {name}")
    p50, p95 = pct(latencies, 50) * 1000, pct(latencies, 95) * 1000
    recall = float(np.mean(recalls))
    return {
        "chunks": n,
        "dimension": DIM,
        "queries": queries,
        "load_s": load_s,
        "index_build_s": index_s,
        "uses_hnsw": name in plan,
        "p50_ms": p50,
        "p95_ms": p95,
        "recall_at_10": recall,
        "min_recall_at_10": min(recalls),
        "rows": [
            (f"{n:,} chunks, dim {DIM}: p50/p95", f"{p50:.1f} / {p95:.1f} ms", ""),
            ("recall@10 vs exact", f"{recall:.3f} (min {min(recalls):.1f})", ""),
            ("HNSW build / plan uses it", f"{index_s:.0f} s / {name in plan}", ""),
        ],
    }
