"""Search that is complete for every tenant (issue #16, item 3): a small tenant beside a big
one in the same HNSW index gets its full ``top_k``, the exact nearest of its own chunks.

Scaled down so it runs in seconds: 20,000 chunks of a big tenant and 200 of a small one
(1 %), 32-dimensional vectors, and the HNSW walk limited to 300 tuples
(``hnsw.max_scan_tuples``, 20,000 by default, as a million chunks would limit it): the
walk alone finds about 3 of the small tenant's chunks. The small tenant's chunks are 200
one-chunk documents, beside 2,000 failed uploads, so the search before exact search walked
the graph for it (for a tenant of a few documents its plan looked their chunks up one by
one instead, which happens to be exact; which one it picks is the planner's guess).
Synthetic chunks are written directly with COPY, into a model of the test's own (its own
partial index)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import numpy as np
import pytest
import pytest_asyncio
from pgvector.asyncpg import register_vector

from docindex import repository
from docindex.config import Settings
from docindex.database import create_pool
from docindex.repository import chunks as chunk_sql

DIM = 32
BIG, SMALL = 20_000, 200
SCAN_TUPLES = 300
TOP_K = 10
QUERIES = 20
# A word in every tenth chunk of both tenants, and one only the small tenant has.
SHARED, OWN = "quarry", "zebrafinch"


@dataclass
class Index:
    pool: asyncpg.Pool
    model: str
    tenants: dict[str, np.ndarray]  # each tenant's vectors, in the order of its chunk ids
    chunk_ids: dict[str, list[uuid.UUID]]
    centres: np.ndarray


def _vectors(rng: np.random.Generator, n: int, centres: np.ndarray) -> np.ndarray:
    v = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.3, size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest_asyncio.fixture(scope="module")
async def index(settings: Settings) -> AsyncIterator[Index]:
    url = settings.database_url or ""
    setup = await create_pool(url, max_size=2)
    # The walk limited as a million chunks limit it, on connections of the test's own.
    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=2,
        init=register_vector,
        server_settings={"hnsw.max_scan_tuples": str(SCAN_TUPLES)},
    )
    assert pool is not None
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(50, DIM))
    suffix = uuid.uuid4().hex[:8]
    model = f"test-tenants-{suffix}"
    sizes = {f"t-big-{suffix}": BIG, f"t-small-{suffix}": SMALL}
    vectors = {t: _vectors(rng, n, centres) for t, n in sizes.items()}
    chunk_ids = {t: [uuid.uuid4() for _ in range(n)] for t, n in sizes.items()}
    generations = {t: uuid.uuid4() for t in sizes}
    run_id = uuid.uuid4()
    # The big tenant's documents have 100 chunks each, the small one's one each (notes,
    # tickets, e-mails): the planner then expects too many of them to look them up one by one.
    per_document = {t: 100 if t.startswith("t-big") else 1 for t in sizes}
    documents = {t: [uuid.uuid4() for _ in range(n // per_document[t])] for t, n in sizes.items()}
    # And 2,000 uploads that failed (documents without chunks): the planner of the search
    # before exact search then expects too many to look up and walks the graph.
    failed = [uuid.uuid4() for _ in range(2_000)]

    def records() -> Iterator[tuple[object, ...]]:
        # The tenants' chunks interleaved, as chunks stored over time are.
        order = [(t, i) for t, n in sizes.items() for i in range(n)]
        for k in rng.permutation(len(order)):
            t, i = order[int(k)]
            words = ["stone", "gravel"] + ([SHARED] if i % 10 == 0 else [])
            if t.startswith("t-small"):
                words.append(OWN)
            text = " ".join(words) + f" chunk {i}"
            doc = documents[t][i // per_document[t]]
            yield (chunk_ids[t][i], doc, i, text, text, model, DIM, vectors[t][i], generations[t])

    async with setup.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO runs (run_id, workflow_id, document_count, status) "
            "VALUES ($1, 'test-tenants', $2, 'completed')",
            run_id,
            sum(len(d) for d in documents.values()),
        )
        await conn.executemany(
            "INSERT INTO generations (generation_id, tenant_id, status, pipeline, "
            "pipeline_digest, chunk_count) VALUES ($1, $2, 'active', '{}', 'test', $3)",
            [(generations[t], t, n) for t, n in sizes.items()],
        )
        await conn.executemany(
            "INSERT INTO documents (document_id, run_id, seq, filename, sha256, size_bytes, "
            "blob_key, status, tenant_id, metadata) VALUES ($1, $2, $3, $4, 'synthetic', 0, "
            "'none', 'completed', $5, $6::jsonb)",
            [
                (d, run_id, k, f"{t}-{k}.txt", t, json.dumps({"kind": "txt"}))
                for k, (t, d) in enumerate((t, d) for t, ds in documents.items() for d in ds)
            ],
        )
        small = next(t for t in sizes if t.startswith("t-small"))
        await conn.executemany(
            "INSERT INTO documents (document_id, run_id, seq, filename, sha256, size_bytes, "
            "blob_key, status, tenant_id) VALUES ($1, $2, $3, 'failed.txt', 'synthetic', 0, "
            "'none', 'failed', $4)",
            [(d, run_id, 100_000 + k, small) for k, d in enumerate(failed)],
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
    # The index as a store makes it, built over the rows; statistics as autovacuum keeps them.
    await repository.ensure_vector_index(setup, model, DIM)
    await setup.execute("ANALYZE chunks, documents, generations")
    try:
        yield Index(pool, model, vectors, chunk_ids, centres)
    finally:
        await setup.execute("DELETE FROM runs WHERE run_id = $1", run_id)  # cascades
        await setup.execute(
            "DELETE FROM generations WHERE generation_id = ANY($1)", [*generations.values()]
        )
        await setup.execute(f"DROP INDEX IF EXISTS {repository.vector_index_name(model, DIM)}")
        await pool.close()
        await setup.close()


def _exact(index: Index, tenant: str, q: np.ndarray) -> list[uuid.UUID]:
    v = index.tenants[tenant]
    similarity = v @ q / np.linalg.norm(q)
    return [index.chunk_ids[tenant][i] for i in np.argsort(-similarity, kind="stable")[:TOP_K]]


async def _walk(index: Index, q: np.ndarray, tenant: str) -> list[uuid.UUID]:
    """The search before exact search: one statement that reads the tenant's active
    generation inside it, planned without knowing how many chunks that has."""
    sql, params = chunk_sql._search_sql(q, index.model, TOP_K, tenant, None, "vector", None)
    async with index.pool.acquire() as conn, conn.transaction():
        # The walk whatever the planner would guess (it may look the tenant's documents up
        # one by one, which happens to be exact: on a database with other tests' tenants
        # in its statistics it did).
        await conn.execute(chunk_sql._VECTOR_SETTINGS + "; SET LOCAL enable_sort = off")
        return [r["chunk_id"] for r in await conn.fetch(sql, *params)]


async def _recall(index: Index, tenant: str, *, walk: bool = False) -> tuple[float, float]:
    """Mean results of TOP_K and recall@TOP_K against exact search, over QUERIES queries."""
    rng = np.random.default_rng(11)
    got, recall = [], []
    for q in _vectors(rng, QUERIES, index.centres):
        if walk:
            found = await _walk(index, q, tenant)
        else:
            hits = await repository.search_chunks(index.pool, q, index.model, TOP_K, tenant)
            found = [uuid.UUID(h.chunk_id) for h in hits]
        got.append(len(found))
        recall.append(len(set(found) & set(_exact(index, tenant, q))) / TOP_K)
    return float(np.mean(got)), float(np.mean(recall))


def _tenant(index: Index, kind: str) -> str:
    return next(t for t in index.tenants if t.startswith(f"t-{kind}-"))


async def test_a_small_tenant_gets_its_exact_nearest_chunks(
    index: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    small, big = _tenant(index, "small"), _tenant(index, "big")
    # What the walk gives the small tenant: the search before exact search (and the check
    # that this index reproduces what a million chunks did).
    walked, _ = await _recall(index, small, walk=True)
    assert walked < TOP_K / 2, walked

    assert await _recall(index, small) == (TOP_K, 1.0)
    # By its share of the index too, not only because it has few chunks.
    with monkeypatch.context() as share:
        share.setattr(chunk_sql, "EXACT_CHUNKS", 0)
        assert await _recall(index, small) == (TOP_K, 1.0)
    # Where exact search would cost more than the walk, the walk may go past
    # hnsw.max_scan_tuples, as far as the generation's share needs: complete too.
    with monkeypatch.context() as walk:
        walk.setattr(chunk_sql, "EXACT_CHUNKS", 0)
        walk.setattr(chunk_sql, "EXACT_VS_WALK", 0)
        got, recall = await _recall(index, small)
        assert got == TOP_K and recall >= 0.8, (got, recall)
    # The big tenant keeps the HNSW walk, with its usual recall.
    got, recall = await _recall(index, big)
    assert got == TOP_K and recall >= 0.8, (got, recall)

    plan = await repository.explain_search(index.pool, DIM, index.model, tenant_id=small)
    assert (
        "chunks_generation" in plan and repository.vector_index_name(index.model, DIM) not in plan
    )
    plan = await repository.explain_search(index.pool, DIM, index.model, tenant_id=big)
    assert repository.vector_index_name(index.model, DIM) in plan


async def test_hybrid_and_keyword_search_are_complete_for_a_small_tenant(index: Index) -> None:
    small = _tenant(index, "small")
    q = _vectors(np.random.default_rng(5), 1, index.centres)[0]
    for mode in ("hybrid", "keyword"):
        # A word in a tenth of both tenants' chunks: the small tenant's 20 are all found.
        hits = await repository.search_chunks(
            index.pool, q, index.model, TOP_K, small, text=SHARED, mode=mode
        )
        assert len(hits) == TOP_K, (mode, len(hits))
        assert all(uuid.UUID(h.chunk_id) in set(index.chunk_ids[small]) for h in hits)
        assert all(SHARED in h.text for h in hits if h.keyword_rank is not None)
    nearest = _exact(index, small, q)
    # Hybrid's vector list is exact search's (a word no chunk has: the list alone).
    hits = await repository.search_chunks(
        index.pool, q, index.model, TOP_K, small, text="xylophone", mode="hybrid"
    )
    assert [uuid.UUID(h.chunk_id) for h in hits] == nearest
    assert [h.vector_rank for h in hits] == list(range(1, TOP_K + 1))
    # With its own word in all its chunks, hybrid returns top_k of them, keyword-ranked too.
    hits = await repository.search_chunks(
        index.pool, q, index.model, 50, small, text=OWN, mode="hybrid"
    )
    assert len(hits) == 50 and all(h.keyword_rank for h in hits)
    plan = await repository.explain_search(
        index.pool, DIM, index.model, mode="hybrid", text=SHARED, tenant_id=small, seqscan=True
    )
    assert "chunks_generation" in plan
