"""Figure 9: small tenants in a big index (issue #16). One partial HNSW index holds every
tenant's chunks of a model; ``--index-chunks`` of them (1,000,000 by default, the documented
figure), most of one big tenant, and tenants of 200, 1,000, 5,000 and 20,000 chunks beside it.
Each tenant is searched through ``repository.search_chunks`` (the API's SQL, its active
generation): vector recall@10 against exact numpy search over the tenant's own chunks, how
many of the 10 asked for came back, p50/p95 of vector, hybrid and keyword search; side by
side, the same queries through the statement search ran before exact search existed (the
tenant's generation read inside it: the HNSW walk, or whatever the planner chose), and
vector search forced exact (not for the big tenant: seconds a query). One tenant of 200
chunks has them in 200 one-chunk documents (notes, tickets, e-mails), the others in
documents of 100 chunks: the plan before looked a tenant's chunks up document by document
when it expected few documents (exact, by luck) and walked the graph otherwise.

Synthetic data, for scale: unit vectors around 300 cluster centres (as figure 7's), every
tenant's drawn from the same centres, so a small tenant's chunks are spread over the whole
index as real tenants' would be; texts of 12-30 made-up words drawn by Zipf's law; queries
are fresh vectors of the same distribution, and two consecutive words of one of the
tenant's chunks. The dimension is 384 (all-MiniLM-L6-v2's) unless ``--index-dim``."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import numpy as np

from bench.common import pct
from bench.context import Ctx
from docindex import repository
from docindex.repository import chunks as chunk_sql

MODEL = "bench-tenants"
TOP_K = 10
SMALL = (200, 1_000, 5_000, 20_000)
CHUNKS_PER_DOCUMENT = 100
MODES: tuple[repository.SearchMode, ...] = ("vector", "hybrid", "keyword")


def _vectors(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    dim = centres.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for at in range(0, n, 100_000):  # in slices: a million at once is gigabytes of float64
        m = min(100_000, n - at)
        v = centres[rng.integers(0, len(centres), m)] + rng.normal(
            scale=0.6 / np.sqrt(dim), size=(m, dim)
        )
        out[at : at + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def _texts(rng: np.random.Generator, n: int) -> list[str]:
    syllables = ["ka", "lo", "mer", "tis", "vun", "dra", "pel", "sor", "qui", "ten", "bar", "ix"]
    words = np.array(
        ["".join(syllables[(i // 12**k) % 12] for k in range(4)) for i in range(12**4)]
    )
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.07
    lengths = rng.integers(12, 31, n)
    drawn = words[rng.choice(len(words), size=int(lengths.sum()), p=p / p.sum())]
    ends = np.cumsum(lengths)
    return [" ".join(drawn[end - length : end]) for end, length in zip(ends, lengths, strict=True)]


async def _before(
    pool: asyncpg.Pool, q: np.ndarray, tenant: str, text: str, mode: repository.SearchMode
) -> set[uuid.UUID]:
    """Search as it was before exact search: one statement that reads the tenant's active
    generation inside it, so its plan does not know how many chunks that has."""
    sql, params = chunk_sql._search_sql(q, MODEL, TOP_K, tenant, text, mode, None)
    settings = chunk_sql._VECTOR_SETTINGS if mode == "vector" else chunk_sql._SEARCH_SETTINGS
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(settings)
        return {r["chunk_id"] for r in await conn.fetch(sql, *params)}


@contextlib.contextmanager
def _forced(kind: str) -> Iterator[None]:
    """Search exactly whatever the generation's size when ``kind`` says "exact"."""
    saved = chunk_sql.EXACT_CHUNKS
    if kind.endswith("exact"):
        chunk_sql.EXACT_CHUNKS = 2**62
    try:
        yield
    finally:
        chunk_sql.EXACT_CHUNKS = saved


async def _measure_tenant(
    pool: asyncpg.Pool,
    tenant: str,
    ids: list[uuid.UUID],
    mine: np.ndarray,
    texts: list[str],
    probes: np.ndarray,
    indexed: float,
) -> dict[str, Any]:
    """One tenant's figures: ``ids``, ``mine`` and ``texts`` are its chunks."""
    size = len(ids)
    rng = np.random.default_rng(size)
    words = []
    for _ in probes:
        text = texts[int(rng.integers(0, size))].split()
        at = int(rng.integers(0, len(text) - 1))
        words.append(" ".join(text[at : at + 2]))
    # Search as the service does it, as it did before exact search, and exact search.
    kinds = (
        *MODES,
        *(f"{mode}, before" for mode in MODES),
        *(("vector, exact",) if size <= 50_000 else ()),
    )
    latencies: dict[str, list[float]] = {k: [] for k in kinds}
    counts: dict[str, list[int]] = {k: [] for k in (*kinds, "keyword, matching")}
    recalls: dict[str, list[float]] = {k: [] for k in kinds if k.startswith("vector")}
    for i, (q, text) in enumerate(zip(probes, words, strict=True)):
        best = np.argpartition(-(mine @ q), TOP_K)[:TOP_K]
        exact = {ids[int(j)] for j in best}
        for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
            mode = kind.split(",")[0]
            t = time.perf_counter()
            if kind.endswith("before"):
                got = await _before(pool, q, tenant, text, mode)  # type: ignore[arg-type]
            else:
                with _forced(kind):
                    hits = await repository.search_chunks(
                        pool,
                        q,
                        MODEL,
                        TOP_K,
                        tenant,
                        text=text,
                        mode=mode,  # type: ignore[arg-type]
                    )
                got = {uuid.UUID(h.chunk_id) for h in hits}
            latencies[kind].append(time.perf_counter() - t)
            counts[kind].append(len(got))
            if kind in recalls:
                recalls[kind].append(len(exact & got) / TOP_K)
        # How many keyword search should return: the tenant's chunks with any of the terms.
        matching = await pool.fetchval(
            f"""SELECT count(*) FROM (
                    SELECT 1 FROM chunks c JOIN documents d USING (document_id)
                    JOIN generations g ON g.generation_id = c.generation_id
                    WHERE d.tenant_id = $2 AND g.status = 'active'
                      AND c.fts @@ {chunk_sql._LOOSE} LIMIT {TOP_K}) AS m""",
            text,
            tenant,
        )
        counts["keyword, matching"].append(matching)
    paths = {
        mode: "exact"
        if chunk_sql._vector_path(
            size, indexed, TOP_K if mode == "vector" else chunk_sql.CANDIDATES
        )
        is None
        else "HNSW"
        for mode in ("vector", "hybrid")
    }
    return {
        "chunks": size,
        "path": paths,
        "recall_at_10": {k: float(np.mean(v)) for k, v in recalls.items()},
        "min_recall_at_10": {k: float(np.min(v)) for k, v in recalls.items()},
        "results_of_10": {k: float(np.mean(v)) for k, v in counts.items()},
        "p50_ms": {m: pct(v, 50) * 1000 for m, v in latencies.items()},
        "p95_ms": {m: pct(v, 95) * 1000 for m, v in latencies.items()},
    }


async def measure(ctx: Ctx) -> dict[str, Any]:
    n = 50_000 if ctx.quick else ctx.index_chunks
    dim = ctx.index_dim
    queries = 20 if ctx.quick else 100
    # Each tenant's chunks and chunks per document (see the docstring: the notes tenant).
    sizes = [s for s in SMALL if s * 4 <= n]
    tenants = {f"bench-small-{s}": (s, CHUNKS_PER_DOCUMENT) for s in sizes}
    tenants["bench-notes-200"] = (200, 1)
    tenants["bench-big"] = (n - sum(sizes) - 200, CHUNKS_PER_DOCUMENT)
    rng = np.random.default_rng(16)
    centres = rng.normal(size=(300, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    pool = ctx.stack.pool

    started = time.perf_counter()
    stored = _vectors(rng, n, centres)
    texts = _texts(rng, n)
    chunk_ids = [uuid.uuid4() for _ in range(n)]
    owner = np.repeat(np.arange(len(tenants)), [size for size, _ in tenants.values()])
    rng.shuffle(owner)  # the tenants' chunks interleaved in the table, as stored over time
    rows_of = {t: np.flatnonzero(owner == i) for i, t in enumerate(tenants)}
    run_id = uuid.uuid4()
    generations = {t: uuid.uuid4() for t in tenants}
    document_of = np.empty(n, dtype=np.int64)
    documents: list[tuple[uuid.UUID, str]] = []
    for t, rows in rows_of.items():
        per_document = tenants[t][1]
        for at in range(0, len(rows), per_document):
            document_of[rows[at : at + per_document]] = len(documents)
            documents.append((uuid.uuid4(), t))

    def records() -> Iterator[tuple[Any, ...]]:
        for i in range(n):
            document, tenant = documents[document_of[i]]
            yield (
                chunk_ids[i],
                document,
                i,
                texts[i],
                texts[i],
                MODEL,
                dim,
                stored[i],
                generations[tenant],
            )

    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO runs (run_id, workflow_id, document_count, status) "
            "VALUES ($1, 'bench-tenants', $2, 'completed')",
            run_id,
            len(documents),
        )
        await conn.executemany(
            "INSERT INTO generations (generation_id, tenant_id, status, pipeline, "
            "pipeline_digest, chunk_count) VALUES ($1, $2, 'active', '{}', 'bench', $3)",
            [(generations[t], t, size) for t, (size, _) in tenants.items()],
        )
        await conn.executemany(
            "INSERT INTO documents (document_id, run_id, seq, filename, sha256, size_bytes, "
            "blob_key, status, tenant_id, metadata) VALUES ($1, $2, $3, $4, 'synthetic', 0, "
            "'none', 'completed', $5, $6::jsonb)",
            [
                (d, run_id, i, f"synthetic-{i}.txt", t, json.dumps({"kind": "txt"}))
                for i, (d, t) in enumerate(documents)
            ],
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
                "generation_id",
            ],
            records=records(),
        )
    load_s = time.perf_counter() - started

    started = time.perf_counter()
    name = repository.vector_index_name(MODEL, dim)
    async with pool.acquire() as conn:
        # The graph in memory (about 2 GB for a million 384-d vectors): on disk it is slower.
        await conn.execute(
            f"SET maintenance_work_mem = '{max(256, n * (dim * 4 + 600) // 2**20)}MB'"
        )
        await conn.execute(
            f"""CREATE INDEX IF NOT EXISTS {name} ON chunks
                USING hnsw ((embedding::vector({dim})) vector_cosine_ops)
                WHERE model = '{MODEL}'"""
        )
        await conn.execute("VACUUM ANALYZE chunks")
        await conn.execute("ANALYZE documents")
        await conn.execute("ANALYZE generations")
        indexed = await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", name)
    index_s = time.perf_counter() - started

    results: dict[str, Any] = {}
    for tenant, (size, _) in tenants.items():
        rows = rows_of[tenant]
        results[tenant] = await _measure_tenant(
            pool,
            tenant,
            [chunk_ids[int(r)] for r in rows],
            stored[rows],
            [texts[int(r)] for r in rows],
            _vectors(rng, queries, centres),
            indexed,
        )
        results[tenant]["documents"] = -(-size // tenants[tenant][1])
    first = next(iter(tenants))
    probe = " ".join(texts[int(rows_of[first][0])].split()[:2])
    plan = await repository.explain_search(
        pool, dim, MODEL, mode="hybrid", text=probe, tenant_id=first, seqscan=True
    )
    await pool.execute("DELETE FROM runs WHERE run_id = $1", run_id)  # cascades
    await pool.execute(
        "DELETE FROM generations WHERE generation_id = ANY($1)", [*generations.values()]
    )
    await pool.execute(f"DROP INDEX IF EXISTS {name}")

    rows_out = []
    for r in results.values():
        label = f"{r['chunks']:,} chunks in {r['documents']:,} documents, of {n:,}"
        recall, got = r["recall_at_10"], r["results_of_10"]

        def ms(kind: str, r: dict[str, Any] = r) -> str:
            return f"{r['p50_ms'][kind]:.1f}/{r['p95_ms'][kind]:.1f}"

        rows_out += [
            (
                f"{label}: vector recall@10, results ({r['path']['vector']}; before)",
                f"{recall['vector']:.3f}, {got['vector']:.1f} "
                f"({recall['vector, before']:.3f}, {got['vector, before']:.1f})",
                "= exact, 10",
            ),
            (
                f"{label}: p50/p95 vector, hybrid ({r['path']['hybrid']}), keyword (before)",
                ", ".join(f"{ms(m)} ({ms(m + ', before')})" for m in MODES) + " ms",
                "p95 ≤ 50 ms",
            ),
            (
                f"{label}: results of 10, hybrid / keyword (chunks with a term)",
                f"{got['hybrid']:.1f} / {got['keyword']:.1f} ({got['keyword, matching']:.1f})",
                "10 / all",
            ),
        ]
        if "vector, exact" in r["p50_ms"]:
            rows_out.append(
                (f"{label}: exact search forced, p50/p95", ms("vector, exact") + " ms", "")
            )
    rows_out.append(
        (f"COPY {n:,} chunks / HNSW build, dim {dim}", f"{load_s:.0f} s / {index_s:.0f} s", "")
    )
    return {
        "chunks": n,
        "dimension": dim,
        "queries_per_tenant": queries,
        "load_s": load_s,
        "index_build_s": index_s,
        "tenants": results,
        "hybrid_plan_small_tenant": plan.splitlines(),
        "rows": rows_out,
    }
