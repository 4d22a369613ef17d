"""Chunks: a stored document's pieces and their vectors, and search over them."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import numpy as np

from docindex.ids import slug

from ._db import Db, transaction
from .generations import record_generation_document


@dataclass(frozen=True)
class ChunkRow:
    """A chunk to store."""

    chunk_id: uuid.UUID
    ordinal: int
    text: str
    embed_text: str
    headings: list[str]
    pages: list[int]
    context: str | None = None


@dataclass(frozen=True)
class ChunkHit:
    """A chunk found by search, best first.

    ``score`` is the mode's: cosine similarity (vector), the keyword rank (keyword), or the
    reciprocal rank fusion of both lists (hybrid). ``vector_rank`` and ``keyword_rank`` are
    the chunk's places (from 1) in the candidate lists it was in."""

    chunk_id: str
    document_id: str
    filename: str
    text: str
    context: str | None
    pages: list[int]
    headings: list[str]
    score: float
    highlight: str = ""
    similarity: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None


SearchMode = Literal["vector", "keyword", "hybrid"]

# Reciprocal rank fusion: a chunk scores 1/(RRF_K + rank) in each list it is in, twice that
# in the keyword list when it has every term of the query. Without the double weight an
# exact identifier ("Figure 7-27", "ISSN 2005-744X") that vector search does not find at
# all is outranked by chunks both lists hold loosely (docs/decisions.md, "Hybrid search").
RRF_K = 60
# Hybrid search fuses this many candidates of each list (more when top_k asks for more).
CANDIDATES = 50
HIGHLIGHT_START, HIGHLIGHT_STOP = "<mark>", "</mark>"
_HEADLINE = (
    f"StartSel={HIGHLIGHT_START}, StopSel={HIGHLIGHT_STOP}, MinWords=15, MaxWords=35, "
    'ShortWord=1, MaxFragments=2, FragmentDelimiter=" … "'
)


@dataclass(frozen=True)
class SearchFilters:
    """Which documents search looks in: any of ``document_ids``, a ``filename`` glob
    (``*``, ``?``, ``[...]``; case-insensitive), and ``metadata`` the document's contains."""

    document_ids: Sequence[uuid.UUID] | None = None
    filename: str | None = None
    metadata: dict[str, Any] | None = None


def filename_regex(glob: str) -> str:
    """A glob as an anchored POSIX regular expression; ``ValueError`` when it is malformed."""
    out, i = ["^"], 0
    while i < len(glob):
        ch = glob[i]
        i += 1
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[":
            end = glob.find("]", i + 1 if glob[i : i + 1] in ("!", "^") else i)
            if end < 0:
                raise ValueError(f"unclosed '[' at position {i - 1}")
            body = glob[i:end]
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            if not body or body.startswith("]"):
                raise ValueError(f"empty character class at position {i - 1}")
            # Inside a bracket expression only \ (Postgres' escape), ^ and ] are special.
            body = "".join("\\" + c if c in "\\^]" else c for c in body)
            out.append("[" + ("^" if negate else "") + body + "]")
            i = end + 1
        else:
            out.append("\\" + ch if not ch.isalnum() and ch != " " else ch)
    return "".join(out) + "$"


async def store_document(
    db: Db,
    document_id: str,
    chunks: Sequence[ChunkRow],
    vectors: np.ndarray,
    model: str,
    pages: int | None,
    metadata: dict[str, Any],
    tokens: dict[str, Any] | None = None,
    cost_usd: float = 0.0,
    *,
    generation_id: str,
    derive: bool = False,
) -> int:
    """Replace the document's chunks in the generation, in one transaction: search serves
    the old ones until it commits, the new ones after. Unless ``derive`` (a generation
    being built from an indexed document), the document is marked completed too.

    Chunk ids are deterministic, so a retried store writes the same rows again.
    """
    dimension = int(vectors.shape[1]) if len(chunks) else 0
    if len(chunks):
        await ensure_vector_index(db, model, dimension)
    doc_uuid, gen_uuid = uuid.UUID(document_id), uuid.UUID(generation_id)
    total_tokens = tokens or {}
    async with transaction(db) as conn:
        # Two attempts of one store can overlap (a worker presumed dead finishing while its
        # retry runs): the row lock makes the second wait, then replace the first's chunks,
        # instead of both deleting the old rows and colliding on the new ones.
        found = await conn.fetchval(
            "SELECT 1 FROM documents WHERE document_id = $1 FOR UPDATE", doc_uuid
        )
        if found is None:
            return 0  # deleted while it was being indexed: nothing to store it for
        # A generation deleted since the run started gets nothing: the document is indexed
        # into the tenant's live generations instead (the store step's derive_into). The
        # share lock keeps a deletion from passing between this check and the insert.
        kept = await conn.fetchval(
            """SELECT status NOT IN ('failed', 'cancelled') FROM generations
               WHERE generation_id = $1 FOR KEY SHARE""",
            gen_uuid,
        )
        if kept:
            await _replace_chunks(conn, doc_uuid, gen_uuid, chunks, vectors, model, dimension)
            await record_generation_document(
                conn,
                gen_uuid,
                doc_uuid,
                "completed",
                chunk_count=len(chunks),
                tokens=total_tokens,
                cost_usd=cost_usd,
            )
        if not derive:
            await conn.execute(
                """UPDATE documents SET status = 'completed', pages = $2, chunk_count = $3,
                          metadata = $4::jsonb, tokens = $5::jsonb, cost_usd = $6,
                          error_type = NULL, error = NULL, last_error_type = NULL,
                          last_error = NULL, last_error_at = NULL, updated_at = now()
                   WHERE document_id = $1""",
                doc_uuid,
                pages,
                len(chunks),
                json.dumps(metadata),
                json.dumps(total_tokens),
                cost_usd,
            )
    return len(chunks) if kept else 0


async def _replace_chunks(
    conn: asyncpg.Connection,
    document: uuid.UUID,
    generation: uuid.UUID,
    chunks: Sequence[ChunkRow],
    vectors: np.ndarray,
    model: str,
    dimension: int,
) -> None:
    # The trigger chunks_deleted takes the old chunks off the generation's count.
    await conn.execute(
        "DELETE FROM chunks WHERE document_id = $1 AND generation_id = $2", document, generation
    )
    await conn.copy_records_to_table(
        "chunks",
        columns=[
            "chunk_id",
            "document_id",
            "ordinal",
            "text",
            "embed_text",
            "headings",
            "pages",
            "model",
            "dimension",
            "embedding",
            "context",
            "generation_id",
        ],
        records=[
            (
                c.chunk_id,
                document,
                c.ordinal,
                c.text,
                c.embed_text,
                c.headings,
                c.pages,
                model,
                dimension,
                vectors[i],
                c.context,
                generation,
            )
            for i, c in enumerate(chunks)
        ],
    )
    await conn.execute(
        """UPDATE generations SET chunk_count = greatest(chunk_count + $2, 0)
           WHERE generation_id = $1""",
        generation,
        len(chunks),
    )


def vector_index_name(model: str, dimension: int) -> str:
    digest = hashlib.sha256(f"{model}:{dimension}".encode()).hexdigest()[:8]
    return f"chunks_hnsw_{slug(model)[:30]}_{dimension}_{digest}"


# Vector indexes this process made sure of: a store does not run DDL each time (it takes
# a lock on the table's catalog entry that waits behind every open transaction on chunks).
_INDEXED: set[str] = set()


async def ensure_vector_index(db: Db, model: str, dimension: int) -> None:
    name = vector_index_name(model, dimension)
    if name in _INDEXED:
        return
    literal = model.replace("'", "''")
    try:
        await db.execute(
            f"""CREATE INDEX IF NOT EXISTS {name} ON chunks
                USING hnsw ((embedding::vector({dimension})) vector_cosine_ops)
                WHERE model = '{literal}'"""
        )
    except asyncpg.UniqueViolationError:
        pass  # another worker created it at the same moment
    _INDEXED.add(name)


async def search_chunks(
    db: Db,
    query_vector: np.ndarray | None,
    model: str | None,
    top_k: int,
    tenant_id: str | None = None,
    *,
    text: str | None = None,
    mode: SearchMode = "vector",
    filters: SearchFilters | None = None,
    generation_id: str | None = None,
) -> list[ChunkHit]:
    """The ``top_k`` best chunks of a generation: ``generation_id``, or the active one of
    ``tenant_id`` (of every tenant when neither is given).

    ``vector`` ranks by cosine distance to ``query_vector`` (chunks of ``model``);
    ``keyword`` ranks ``text`` by full-text search and needs no vector; ``hybrid`` fuses
    the first ``CANDIDATES`` of each by reciprocal rank. One statement either way (after a
    look-up of the generation, in the same snapshot); ``text`` also marks the highlights of
    a vector search.

    A generation that is a small share of its model's chunks is searched exactly (its own
    chunks ordered by distance) rather than through the HNSW graph of every tenant's chunks,
    which stops before it finds enough of them (``_vector_path``)."""
    async with _snapshot(db) as conn:
        planned = await _planned_search(
            conn, query_vector, model, top_k, tenant_id, text, mode, filters, generation_id
        )
        if planned is None:
            return []  # no such generation, or the tenant has none active
        sql, params, settings = planned
        await conn.execute(settings)
        rows = await conn.fetch(sql, *params)
    return [
        ChunkHit(
            chunk_id=str(r["chunk_id"]),
            document_id=str(r["document_id"]),
            filename=r["filename"],
            text=r["text"],
            context=r["context"],
            pages=list(r["pages"]),
            headings=list(r["headings"]),
            score=float(r["score"]),
            highlight=_highlight(r["highlight"], r["heading_highlight"], r["text"], text or ""),
            similarity=r["similarity"],
            vector_rank=r["vector_rank"],
            keyword_rank=r["keyword_rank"],
        )
        for r in rows
    ]


async def _planned_search(
    conn: asyncpg.Connection,
    query_vector: np.ndarray | None,
    model: str | None,
    top_k: int,
    tenant_id: str | None,
    text: str | None,
    mode: SearchMode,
    filters: SearchFilters | None,
    generation_id: str | None,
) -> tuple[str, list[Any], str] | None:
    """The search statement, its parameters and the settings it runs under; None when the
    generation searched does not exist. The generation (the one named, or the tenant's
    active one) is looked up first, with what decides between the HNSW walk and exact search;
    keyword and hybrid search are then planned for that generation's size too."""
    exact, settings = False, ""
    if generation_id is not None or tenant_id is not None:
        dimension = 0 if query_vector is None else int(query_vector.shape[0])
        found = await conn.fetchrow(
            _SEARCHED_GENERATION[generation_id is None],
            uuid.UUID(generation_id) if generation_id is not None else tenant_id,
            vector_index_name(model or "", dimension),
        )
        if found is None:
            return None
        generation_id = str(found["generation_id"])
        if mode != "keyword":
            candidates = top_k if mode != "hybrid" else max(CANDIDATES, top_k)
            scan = _vector_path(found["chunk_count"], found["indexed"], candidates)
            exact = scan is None
            if not exact:
                # The walk, not a sort: knowing the tenant, the planner would rather look a
                # big generation's chunks up document by document and sort them all by
                # distance (20,000 of them: 200 ms, where the walk takes 20).
                settings = "; SET LOCAL enable_sort = off"
            if scan is not None and scan > found["scan_tuples"]:
                settings += f"; SET LOCAL hnsw.max_scan_tuples = {scan}"
    sql, params = _search_sql(
        query_vector, model, top_k, tenant_id, text, mode, filters, generation_id, exact
    )
    # Keyword search is planned for the query's text, never a generic plan (see _E);
    # pgvector 0.8 keeps scanning the graph when the filters drop candidates (relaxed order:
    # ``vrank`` puts them back in strict order). One round trip for both. Exact search is
    # planned for its generation (how many chunks it has: statistics of generation_id).
    base = _VECTOR_SETTINGS if mode == "vector" and not exact else _SEARCH_SETTINGS
    return sql, params, base + settings


def _search_sql(
    query_vector: np.ndarray | None,
    model: str | None,
    top_k: int,
    tenant_id: str | None,
    text: str | None,
    mode: SearchMode,
    filters: SearchFilters | None,
    generation_id: str | None = None,
    exact: bool = False,
) -> tuple[str, list[Any]]:
    if mode != "keyword" and (query_vector is None or model is None):
        raise ValueError(f"{mode} search needs a query vector and its model")
    if mode != "vector" and not text:
        raise ValueError(f"{mode} search needs the query's text")
    params: list[Any] = [text or ""]
    documents, named = _document_conditions(params, tenant_id, filters or SearchFilters())
    generation = _generation_condition(params, tenant_id, generation_id)
    # Exact search is planned for its generation: through chunks_generation, its chunks only.
    nearest = f"c.generation_id = ${len(params)}::uuid" if exact else generation
    dimension, vector_param = 0, ""
    if query_vector is not None:
        dimension = int(query_vector.shape[0])
        params.append(query_vector)
        vector_param = f"${len(params)}::vector({dimension})"
    # The cast and the model literal must match the partial HNSW index at plan time for it
    # to be used; a bind parameter would not (a generic plan cannot prove the predicate).
    model_literal = "'" + (model or "").replace("'", "''") + "'"
    candidates = top_k if mode != "hybrid" else max(CANDIDATES, top_k)
    ctes = []
    if mode != "keyword":
        # Exact: the function, not the operator, so no plan can order by the HNSW index;
        # the generation's chunks come through chunks_generation and are sorted (top-N).
        distance = (
            f"cosine_distance(c.embedding::vector({dimension}), {vector_param})"
            if exact
            else f"c.embedding::vector({dimension}) <=> {vector_param}"
        )
        ctes.append(
            f"""vec AS MATERIALIZED (
                SELECT c.chunk_id, {distance} AS distance
                FROM chunks c JOIN documents d USING (document_id)
                WHERE c.model = {model_literal} AND {nearest} AND {documents}
                ORDER BY distance{", c.chunk_id" if exact else ""} LIMIT {candidates}
            ),
            vrank AS (
                SELECT chunk_id, distance,
                       row_number() OVER (ORDER BY distance, chunk_id) AS rank
                FROM vec
            )"""
        )
    if mode != "vector":
        ctes.append(
            _keyword_ctes(
                f"{named} AND {generation}"
                if named
                else (
                    "chunks c JOIN documents d USING (document_id) "
                    f"WHERE {generation} AND {documents}"
                ),
                candidates,
            )
        )
    if mode == "vector":
        fused = """SELECT chunk_id, rank AS vector_rank, NULL::bigint AS keyword_rank,
                          1 - distance AS score
                   FROM vrank"""
    elif mode == "keyword":
        fused = """SELECT chunk_id, NULL::bigint AS vector_rank, rank AS keyword_rank,
                          kscore AS score
                   FROM krank"""
    else:
        fused = f"""SELECT chunk_id, v.rank AS vector_rank, k.rank AS keyword_rank,
                          coalesce(1.0 / ({RRF_K} + v.rank), 0)
                          + coalesce((1.0 + (k.kscore >= 1)::int) / ({RRF_K} + k.rank), 0)
                          AS score
                   FROM vrank v FULL JOIN krank k USING (chunk_id)"""
    similarity = (
        "NULL"
        if query_vector is None
        else f"""CASE WHEN c.model = {model_literal}
                 THEN 1 - (c.embedding::vector({dimension}) <=> {vector_param}) END"""
    )
    sql = f"""WITH {", ".join(ctes)},
        fused AS MATERIALIZED (
            SELECT * FROM ({fused}) AS f
            ORDER BY score DESC, least(vector_rank, keyword_rank), chunk_id
            LIMIT {top_k}
        )
        SELECT c.chunk_id, c.document_id, d.filename, c.text, c.context, c.pages, c.headings,
               f.score::float8 AS score, ({similarity})::float8 AS similarity,
               f.vector_rank, f.keyword_rank,
               ts_headline('english', c.text, {_LOOSE}, '{_HEADLINE}') AS highlight,
               ts_headline('english', array_to_string(c.headings, ' / '), {_LOOSE},
                           '{_HEADLINE}, HighlightAll=true') AS heading_highlight
        FROM fused f JOIN chunks c USING (chunk_id) JOIN documents d USING (document_id)
        ORDER BY f.score DESC, least(f.vector_rank, f.keyword_rank), c.chunk_id"""
    return sql, params


_VECTOR_SETTINGS = "SET LOCAL hnsw.iterative_scan = relaxed_order"
_SEARCH_SETTINGS = f"SET LOCAL plan_cache_mode = force_custom_plan; {_VECTOR_SETTINGS}"

# One HNSW index holds every tenant's chunks of a model; a search keeps the chunks of its
# generation among those the graph walk visits, and the walk stops after
# hnsw.max_scan_tuples (20,000) of them. A generation that is a small share of the index
# has too few of its chunks among them: a tenant of 200 chunks beside a million others' got
# 4 of 10 (docs/decisions.md, "Complete search for every tenant"). The walk needs to visit
# about candidates / share chunks; exact search (the generation's own chunks, through
# chunks_generation, ordered by distance) reads all of the generation's, each costing about
# what a visit costs. So a generation is searched exactly when it has at most EXACT_CHUNKS
# chunks (a few milliseconds, and complete whatever the statistics say), or at most
# EXACT_VS_WALK times the visits the walk would need (exact is then as cheap, and finds the
# true nearest where the walk's recall drops); otherwise the walk may visit SCAN_MARGIN
# times what it needs (more than hnsw.max_scan_tuples when the share is small), so it stops
# at the LIMIT, not at the cap.
EXACT_CHUNKS = 1_000
EXACT_VS_WALK = 4
SCAN_MARGIN = 10


def _vector_path(chunk_count: int, indexed: float, candidates: int) -> int | None:
    """How a generation of ``chunk_count`` chunks, in an HNSW index of ``indexed`` (its
    statistics: 0 or -1 before the first ANALYZE), is searched for ``candidates``: None for
    exact search, else the tuples the walk may visit."""
    visits = candidates * max(indexed, chunk_count, 1) / max(chunk_count, 1)
    if chunk_count <= EXACT_CHUNKS or chunk_count <= EXACT_VS_WALK * visits:
        return None
    return math.ceil(SCAN_MARGIN * visits)


# The generation searched, its chunk count and the size of the model's index, in one look-up
# (by generation id, or the tenant's active one).
_SEARCHED_GENERATION = {
    is_tenant: f"""SELECT g.generation_id, g.chunk_count,
                  coalesce((SELECT reltuples FROM pg_class WHERE oid = to_regclass($2)), 0)
                      AS indexed,
                  coalesce(current_setting('hnsw.max_scan_tuples', true)::int, 20000)
                      AS scan_tuples
           FROM generations g WHERE {where}"""
    for is_tenant, where in (
        (False, "g.generation_id = $1"),
        (True, "g.tenant_id = $1 AND g.status = 'active'"),
    )
}


@contextlib.asynccontextmanager
async def _snapshot(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A read-only transaction whose statements share one snapshot, so the generation looked
    up and the chunks searched are of the same moment (a promotion or a deletion in between
    changes neither); inside a caller's transaction, a savepoint of it."""
    if isinstance(db, asyncpg.Pool):
        async with (
            db.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield conn
    else:
        async with transaction(db) as conn:
            yield conn


# The query's tsqueries, written out where they are used rather than computed once in a
# CTE: with a custom plan ($1 known: _SEARCH_SETTINGS) the planner folds each into a
# constant and estimates from the index's statistics how many chunks match it, so a query
# of common words reads chunks in order until it has enough instead of building a bitmap of
# most of the table. ``_LOOSE`` matches chunks with any of the query's terms (English stems,
# or its words as written when they are all stop words; CJK bigrams), ``_EVERY`` those with
# all of them, ``_PHRASE`` those with its words as written, in order; ``_TERMS`` are the
# lexemes of ``_LOOSE``.
_E = "websearch_to_tsquery('english', docindex_without_cjk($1))"
_S = "websearch_to_tsquery('simple', docindex_without_cjk($1))"
_B = "plainto_tsquery('simple', docindex_cjk_bigrams($1))"
_LOOSE = (
    f"(CASE WHEN numnode({_E}) > 0 THEN docindex_any_term({_E})"
    f" ELSE docindex_any_term({_S}) END || docindex_any_term({_B}))"
)
_EVERY = f"(CASE WHEN numnode({_E}) > 0 THEN {_E} ELSE {_S} END && {_B})"
_PHRASE = "phraseto_tsquery('simple', $1)"
_TERMS = (
    f"(CASE WHEN numnode({_E}) > 0 THEN to_tsvector('english', docindex_without_cjk($1))"
    " ELSE to_tsvector('simple', docindex_without_cjk($1)) END"
    " || to_tsvector('simple', docindex_cjk_bigrams($1)))"
)

# Ranking reads each matching chunk's tsvector (microseconds each: a 100k-chunk index has
# queries whose terms are in most chunks), so keyword search answers in tiers, each ranking
# at most RANKED chunks: those with every term; if fewer than wanted, those with any of its
# rarer terms; if still fewer, those with any term. A term is common when ANALYZE's
# statistics put it in more than COMMON_ROWS chunks, so on a small index none is; like
# BM25's IDF, a chunk that has only a query's "floor" or "section" adds little. ts_rank
# orders within a tier (headings weigh most; length-normalised, scaled to [0, 1)); every
# term adds 1 and the query's words in their order 1 more, so the tiers never interleave.
RANKED = 1000
COMMON_ROWS = 1000
_STATS_CTES = f"""stats AS MATERIALIZED (
    SELECT s.most_common_elems::text::text[] AS lexemes, s.most_common_elem_freqs AS freqs,
           (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'chunks'::regclass) AS rows
    FROM pg_stats s
    WHERE s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'fts'
),
rare AS MATERIALIZED (
    SELECT string_agg(
               '''' || replace(replace(t.lexeme, '\\', '\\\\'), '''', '''''') || '''', ' | '
           )::tsquery AS query
    FROM unnest({_TERMS}) AS t
    WHERE coalesce((SELECT freqs[array_position(lexemes, t.lexeme)] * rows FROM stats), 0)
          <= {COMMON_ROWS}
)"""


def _keyword_ctes(chunks: str, candidates: int) -> str:
    """The keyword candidates, best first, as ``krank`` (chunk_id, kscore, rank), from
    ``chunks`` (a FROM and WHERE that give the chunks ``c`` search may return)."""

    def tier(name: str, match: str, bonus: str = "", gate: str = "") -> str:
        return f"""{name} AS MATERIALIZED (
            SELECT chunk_id, ts_rank(fts, {_LOOSE}, 1 | 32){bonus} AS kscore
            FROM (SELECT c.chunk_id, c.fts FROM {chunks} AND c.fts @@ {match} {gate}
                  LIMIT {RANKED}) AS found
            ORDER BY kscore DESC, chunk_id LIMIT {candidates}
        )"""

    found_before = """(SELECT count(*) FROM (SELECT chunk_id FROM kw_every
                                          UNION SELECT chunk_id FROM kw_rare) AS found)"""
    return ",\n".join(
        [
            _STATS_CTES,
            tier("kw_every", _EVERY, f" + 1 + (fts @@ {_PHRASE})::int"),
            tier(
                "kw_rare",
                "(SELECT query FROM rare)",
                gate=f"AND (SELECT count(*) FROM kw_every) < {candidates}",
            ),
            tier("kw_any", _LOOSE, gate=f"AND {found_before} < {candidates}"),
            f"""kw AS (
                SELECT DISTINCT ON (chunk_id) chunk_id, kscore
                FROM (SELECT * FROM kw_every UNION ALL SELECT * FROM kw_rare
                      UNION ALL SELECT * FROM kw_any) AS found
                ORDER BY chunk_id, kscore DESC
            ),
            krank AS (
                SELECT chunk_id, kscore, row_number() OVER (ORDER BY kscore DESC, chunk_id) AS rank
                FROM kw ORDER BY kscore DESC, chunk_id LIMIT {candidates}
            )""",
        ]
    )


_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")


def _highlight(headline: str, headings: str, text: str, query: str, width: int = 60) -> str:
    """The text's ``ts_headline``; when the query's words are only in the chunk's headings,
    those headings (marked) before it. ``ts_headline`` marks whole words, and a CJK query's
    run is usually inside a longer word of the text: when it marked nothing, mark the first
    place the text has one of those runs."""
    if HIGHLIGHT_START in headline:
        return headline
    if HIGHLIGHT_START in headings:
        return f"{headings}\n{headline}"
    for run in sorted(_CJK_RUN.findall(query), key=len, reverse=True):
        at = text.find(run) if len(run) > 1 else -1
        if at >= 0:
            start, end = max(0, at - width), min(len(text), at + len(run) + width)
            return (
                ("… " if start else "")
                + text[start:at]
                + HIGHLIGHT_START
                + run
                + HIGHLIGHT_STOP
                + text[at + len(run) : end]
                + (" …" if end < len(text) else "")
            )
    return headline


def _document_conditions(
    params: list[Any], tenant_id: str | None, f: SearchFilters
) -> tuple[str, str]:
    """SQL conditions on ``d`` (a chunk's document) for the search, and, with filters, the
    chunks keyword search reads instead of joining; values are appended to ``params``.

    With filters, keyword search names the documents up front (an array the plan computes
    once) and reads ``chunks`` alone, so one scan intersects the full-text index with those
    documents' chunks; a join had the planner scan the full-text index again for each
    document. Vector search keeps the join: HNSW's iterative scan filters as it goes,
    faster than ordering every chunk of the documents by distance."""

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    conditions = ["true"]
    if tenant_id is not None:
        conditions.append(f"{{d}}.tenant_id = {param(tenant_id)}")
    if f.document_ids is not None:
        ids = param(list(f.document_ids))
        conditions.append(f"{{d}}.document_id = ANY({ids}::uuid[])")
    if f.filename is not None:
        conditions.append(f"{{d}}.filename ~* {param(filename_regex(f.filename))}")
    if f.metadata is not None:
        conditions.append(f"{{d}}.metadata @> {param(json.dumps(f.metadata))}::jsonb")
    where = " AND ".join(conditions)
    if f.document_ids is None and f.filename is None and f.metadata is None:
        return where.format(d="d"), ""
    named = where.format(d="named")
    return where.format(d="d"), (
        "chunks c WHERE c.document_id = ANY(ARRAY("
        f"SELECT named.document_id FROM documents named WHERE {named}))"
    )


def _generation_condition(
    params: list[Any], tenant_id: str | None, generation_id: str | None
) -> str:
    """The SQL condition on ``c`` that keeps the chunks of the generation searched: the one
    named, or the tenant's active one (every tenant's without a tenant). Read in the same
    statement as the chunks, so a promotion switches search between two statements, never
    within one."""
    if generation_id is not None:
        params.append(uuid.UUID(generation_id))
        # A sub-select, so the plan is the one it was when the generation was read here:
        # the planner does not take its size into account (with it, it ordered a 20,000
        # chunk generation by distance rather than walk the graph: 200 ms, not 20).
        return f"c.generation_id = (SELECT ${len(params)}::uuid)"
    if tenant_id is not None:
        params.append(tenant_id)
        return (
            "c.generation_id = (SELECT generation_id FROM generations "
            f"WHERE tenant_id = ${len(params)} AND status = 'active')"
        )
    return "c.generation_id IN (SELECT generation_id FROM generations WHERE status = 'active')"


async def explain_search(
    db: Db,
    dimension: int,
    model: str,
    *,
    mode: SearchMode = "vector",
    text: str = "search",
    seqscan: bool = False,
    tenant_id: str | None = None,
    top_k: int = 5,
) -> str:
    """The plan of ``search_chunks``'s statement; tests and benchmarks check it uses the
    HNSW and full-text indexes. Unless ``seqscan``, sequential scans and sorts are off: a small
    test table would otherwise be read whole or sorted by distance, which the planner rightly
    prefers at that size (and chooses by statistics that autovacuum may not have gathered
    yet); with ``seqscan`` on a big table, the planner's own choice. With ``tenant_id``, the
    plan for that tenant's active generation (exact search when it is a small share)."""
    probe = np.zeros(dimension, dtype=np.float32)
    probe[0] = 1.0
    async with _snapshot(db) as conn:
        planned = await _planned_search(
            conn, probe, model, top_k, tenant_id, text, mode, None, None
        )
        if planned is None:
            raise LookupError(f"tenant {tenant_id!r} has no active generation")
        sql, params, _ = planned
        await conn.execute(_SEARCH_SETTINGS)
        if not seqscan:
            await conn.execute("SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off")
        rows = await conn.fetch("EXPLAIN " + sql, *params)
    return "\n".join(r[0] for r in rows)
