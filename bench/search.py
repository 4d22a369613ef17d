"""Figure 7: search over 100k stored chunks through the same SQL the API runs
(``repository.search_chunks``): p50/p95 latency of vector, keyword and hybrid search, recall@10
of vector search against exact search, and whether the plans use the HNSW and GIN indexes.

Vectors are synthetic but not uniform noise (on which no ANN index does well, nor any real
embedding looks like): unit vectors around a few hundred cluster centres, as embeddings of
documents on many topics are. Texts are synthetic too, but text-like: words drawn with
Zipf's law (s = 1.07) over 200,000 ranks, the first ones the words of tests/data's PDFs in
their order of frequency there (English and German), the rest made-up rarer words, so
posting lists are as long as in real text (common words in most chunks, most words in few);
60-200 words a chunk. One chunk in 500 carries a unique section number ("07 92 00") and
part number ("XJ9-220B"), one in 100 a Korean, Chinese or Japanese sentence. Queries: 2-4
consecutive words of a random chunk, the identifiers, and CJK fragments."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import pct
from bench.context import Ctx
from docindex import repository

MODEL = "bench-synthetic"
DIM = 384
TOP_K = 10
VOCABULARY = 200_000
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "pdf"
CJK = [
    "건축물의 에너지절약설계기준에 따라 외벽 단열재의 두께를 확인한다",
    "지하 주차장의 방수 공사는 시트 방수로 시공한다",
    "건축물의 화재안전기준 및 피난시설의 설치 기준",
    "建筑节能设计标准规定外墙保温层的厚度",
    "屋面防水工程应符合设计要求和施工规范",
    "消防设计审查验收管理暂行规定",
    "建築基準法に基づく防火区画の確認を行う",
]
CJK_QUERIES = [
    "에너지절약설계기준",
    "방수 공사",
    "화재안전기준",
    "节能设计",
    "屋面防水",
    "防火区画",
]
MODES: tuple[repository.SearchMode, ...] = ("vector", "keyword", "hybrid")


def _vectors(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    picks = rng.integers(0, len(centres), n)
    v = centres[picks] + rng.normal(scale=0.6 / np.sqrt(DIM), size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _real_words() -> list[str]:
    """The words of tests/data's PDFs, most frequent first."""
    import pypdfium2

    counts: Counter[str] = Counter()
    for path in sorted(DATA.rglob("*.pdf")):
        pdf = pypdfium2.PdfDocument(path)
        for page in pdf:
            counts.update(w for w in page.get_textpage().get_text_range().split() if w.isalpha())
    return [w for w, _ in counts.most_common()]


def _texts(rng: np.random.Generator, n: int) -> tuple[list[str], list[tuple[str, int]]]:
    """``n`` chunk texts, and the identifiers planted in them with their chunk's index."""
    real = _real_words()
    syllables = ["ka", "lo", "mer", "tis", "vun", "dra", "pel", "sor", "qui", "ten", "bar", "ix"]
    made_up = [
        "".join(syllables[(i // len(syllables) ** k) % len(syllables)] for k in range(5))
        for i in range(VOCABULARY - len(real))
    ]
    words = np.array(real + made_up)
    p = 1.0 / np.arange(1, len(words) + 1) ** 1.07
    lengths = rng.integers(60, 201, n)
    drawn = rng.choice(len(words), size=int(lengths.sum()), p=p / p.sum())
    texts, at = [], 0
    for length in lengths:
        texts.append(" ".join(words[drawn[at : at + length]]))
        at += length
    planted: list[tuple[str, int]] = []
    for i in range(0, n, 500):
        section = f"{i // 10000:02d} {i // 100 % 100:02d} {rng.integers(0, 100):02d}"
        part = f"XJ{rng.integers(1, 10)}-{i // 500:03d}{chr(65 + i % 26)}"
        texts[i] += f" Section {section}, part {part}."
        planted += [(section, i), (part, i)]
    for i in range(7, n, 100):
        texts[i] += " " + CJK[i % len(CJK)]
    return texts, planted


async def measure(ctx: Ctx) -> dict[str, Any]:
    n = 10_000 if ctx.quick else 100_000
    queries = 50 if ctx.quick else 200
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(300, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    stored = _vectors(rng, n, centres)
    texts, planted = _texts(rng, n)
    ids = [uuid.uuid4() for _ in range(n)]
    pool = ctx.stack.pool

    started = time.perf_counter()
    run_id = uuid.uuid4()
    docs = [uuid.uuid4() for _ in range(max(1, n // 1000))]
    # Search serves active generations: the chunks are one, of a tenant of their own.
    generation = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO runs (run_id, workflow_id, document_count, status) "
            "VALUES ($1, 'bench-search', $2, 'completed')",
            run_id,
            len(docs),
        )
        await conn.execute(
            "INSERT INTO generations (generation_id, tenant_id, status, pipeline, "
            "pipeline_digest, chunk_count) VALUES ($1, 'bench-search', 'active', '{}', "
            "'bench', $2)",
            generation,
            n,
        )
        await conn.executemany(
            "INSERT INTO documents (document_id, run_id, seq, filename, sha256, size_bytes, "
            "blob_key, status, metadata, tenant_id) "
            "VALUES ($1, $2, $3, $4, 'synthetic', 0, 'none', 'completed', $5::jsonb, "
            "'bench-search')",
            [
                (d, run_id, i, f"synthetic-{i}.pdf", json.dumps({"kind": ("pdf", "md")[i % 2]}))
                for i, d in enumerate(docs)
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
            records=(
                (
                    ids[i],
                    docs[i % len(docs)],
                    i,
                    texts[i],
                    texts[i],
                    MODEL,
                    DIM,
                    stored[i],
                    generation,
                )
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
        # Statistics as autovacuum would have them (it analyzes documents once 50 have come).
        await conn.execute("VACUUM ANALYZE chunks")
        await conn.execute("ANALYZE documents")
    index_s = time.perf_counter() - started
    # Whether the plans can use the indexes (sequential scans off, as the tests check), and
    # whether the planner picks them on its own for a query of two words and a number.
    probe = "floor plan section 7"
    plans = {
        mode: await repository.explain_search(pool, DIM, MODEL, mode=mode, text=probe)
        for mode in MODES
    }
    chosen = {
        mode: await repository.explain_search(pool, DIM, MODEL, mode=mode, text=probe, seqscan=True)
        for mode in MODES
    }
    uses_hnsw = name in plans["vector"] and name in plans["hybrid"]
    uses_gin = "chunks_fts" in plans["keyword"] and "chunks_fts" in plans["hybrid"]
    chosen_hnsw = name in chosen["vector"] and name in chosen["hybrid"]
    chosen_gin = "chunks_fts" in chosen["keyword"] and "chunks_fts" in chosen["hybrid"]

    # Queries: consecutive words of a chunk, then the planted identifiers and CJK fragments.
    kinds = {"words": queries // 2, "identifier": queries // 4}
    kinds["cjk"] = queries - sum(kinds.values())
    asked: list[tuple[str, str, int | None]] = []
    for _ in range(kinds["words"]):
        words = texts[int(rng.integers(0, n))].split()
        length = int(rng.integers(2, 5))
        at = int(rng.integers(0, len(words) - length))
        asked.append(("words", " ".join(words[at : at + length]), None))
    for k in rng.permutation(len(planted))[: kinds["identifier"]]:
        identifier, target = planted[int(k)]
        asked.append(("identifier", identifier, target))
    asked.extend(("cjk", CJK_QUERIES[i % len(CJK_QUERIES)], None) for i in range(kinds["cjk"]))

    probes = _vectors(rng, len(asked), centres)
    latencies: dict[str, list[float]] = {mode: [] for mode in MODES}
    latencies["hybrid, filtered"] = []
    recalls: list[float] = []
    by_kind: dict[str, dict[str, list[float]]] = {
        k: {m: [] for m in (*MODES, "hybrid, filtered")} for k in kinds
    }
    found = {mode: 0 for mode in MODES}
    filters = repository.SearchFilters(filename="synthetic-1*.pdf", metadata={"kind": "md"})
    for i, ((kind, text, target), q) in enumerate(zip(asked, probes, strict=True)):
        # Each mode goes first in turn: the first to ask pays for reading the chunks it
        # finds into the cache, and the others would otherwise find them there.
        for mode in MODES[i % 3 :] + MODES[: i % 3]:
            t = time.perf_counter()
            rows = await repository.search_chunks(pool, q, MODEL, TOP_K, text=text, mode=mode)
            latencies[mode].append(time.perf_counter() - t)
            by_kind[kind][mode].append(latencies[mode][-1])
            if target is not None:
                found[mode] += ids[target] in {uuid.UUID(r.chunk_id) for r in rows}
            if mode == "vector":
                exact = {ids[i] for i in np.argsort(-(stored @ q))[:TOP_K]}
                recalls.append(len(exact & {uuid.UUID(r.chunk_id) for r in rows}) / TOP_K)
        t = time.perf_counter()
        await repository.search_chunks(
            pool, q, MODEL, TOP_K, text=text, mode="hybrid", filters=filters
        )
        latencies["hybrid, filtered"].append(time.perf_counter() - t)
        by_kind[kind]["hybrid, filtered"].append(latencies["hybrid, filtered"][-1])
    await pool.execute("DELETE FROM runs WHERE run_id = $1", run_id)  # cascades
    await pool.execute("DELETE FROM generations WHERE generation_id = $1", generation)
    await pool.execute(f"DROP INDEX IF EXISTS {name}")

    ms = {mode: (pct(v, 50) * 1000, pct(v, 95) * 1000) for mode, v in latencies.items()}
    recall = float(np.mean(recalls))
    p50, p95 = ms["vector"]
    rows = [
        (f"{n:,} chunks, dim {DIM}, {mode}: p50/p95", f"{lo:.1f} / {hi:.1f} ms", "p95 ≤ 50 ms")
        for mode, (lo, hi) in ms.items()
    ]
    return {
        "chunks": n,
        "dimension": DIM,
        "queries": len(asked),
        "query_kinds": kinds,
        "load_s": load_s,
        "index_build_s": index_s,
        "uses_hnsw": uses_hnsw,
        "uses_fts_index": uses_gin,
        "planner_picks": {"hnsw": chosen_hnsw, "fts_index": chosen_gin},
        "plans": {mode: plan.splitlines() for mode, plan in chosen.items()},
        "p50_ms": p50,
        "p95_ms": p95,
        "modes": {mode: {"p50_ms": lo, "p95_ms": hi} for mode, (lo, hi) in ms.items()},
        "p95_ms_by_query_kind": {
            k: {m: pct(v, 95) * 1000 for m, v in modes.items()} for k, modes in by_kind.items()
        },
        "identifiers_in_top_10": {mode: found[mode] / kinds["identifier"] for mode in MODES},
        "recall_at_10": recall,
        "min_recall_at_10": min(recalls),
        "rows": [
            *rows,
            ("recall@10 vs exact (vector)", f"{recall:.3f} (min {min(recalls):.1f})", ""),
            (
                "planted identifier in the top 10: keyword / hybrid",
                f"{found['keyword'] / kinds['identifier']:.2f} / "
                f"{found['hybrid'] / kinds['identifier']:.2f}",
                "(synthetic vectors know no text)",
            ),
            (
                "HNSW build / plans use HNSW, GIN (picked by the planner)",
                f"{index_s:.0f} s / {uses_hnsw}, {uses_gin} ({chosen_hnsw}, {chosen_gin})",
                "",
            ),
            (f"COPY {n:,} chunks (fts generated, GIN kept)", f"{load_s:.0f} s", ""),
        ],
    }
