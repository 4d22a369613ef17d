"""Chunks: a stored document's pieces and their vectors, and search over them."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np

from docindex.ids import slug

from ._db import Db, transaction


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
    """A chunk found by search, nearest first."""

    chunk_id: str
    document_id: str
    filename: str
    text: str
    context: str | None
    pages: list[int]
    headings: list[str]
    score: float


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
) -> int:
    """Replace the document's chunks and mark it completed, in one transaction.

    Chunk ids are deterministic, so a retried store writes the same rows again.
    """
    dimension = int(vectors.shape[1]) if len(chunks) else 0
    if len(chunks):
        await ensure_vector_index(db, model, dimension)
    doc_uuid = uuid.UUID(document_id)
    async with transaction(db) as conn:
        # Two attempts of one store can overlap (a worker presumed dead finishing while its
        # retry runs): the row lock makes the second wait, then replace the first's chunks,
        # instead of both deleting the old rows and colliding on the new ones.
        await conn.execute("SELECT 1 FROM documents WHERE document_id = $1 FOR UPDATE", doc_uuid)
        await conn.execute("DELETE FROM chunks WHERE document_id = $1", doc_uuid)
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
            ],
            records=[
                (
                    c.chunk_id,
                    doc_uuid,
                    c.ordinal,
                    c.text,
                    c.embed_text,
                    c.headings,
                    c.pages,
                    model,
                    dimension,
                    vectors[i],
                    c.context,
                )
                for i, c in enumerate(chunks)
            ],
        )
        await conn.execute(
            """UPDATE documents SET status = 'completed', pages = $2, chunk_count = $3,
                      metadata = $4::jsonb, tokens = $5::jsonb, cost_usd = $6,
                      error_type = NULL, error = NULL, updated_at = now()
               WHERE document_id = $1""",
            doc_uuid,
            pages,
            len(chunks),
            json.dumps(metadata),
            json.dumps(tokens or {}),
            cost_usd,
        )
    return len(chunks)


def vector_index_name(model: str, dimension: int) -> str:
    digest = hashlib.sha256(f"{model}:{dimension}".encode()).hexdigest()[:8]
    return f"chunks_hnsw_{slug(model)[:30]}_{dimension}_{digest}"


async def ensure_vector_index(db: Db, model: str, dimension: int) -> None:
    name = vector_index_name(model, dimension)
    literal = model.replace("'", "''")
    try:
        await db.execute(
            f"""CREATE INDEX IF NOT EXISTS {name} ON chunks
                USING hnsw ((embedding::vector({dimension})) vector_cosine_ops)
                WHERE model = '{literal}'"""
        )
    except asyncpg.UniqueViolationError:
        pass  # another worker created it at the same moment


async def search_chunks(
    db: Db,
    query_vector: np.ndarray,
    model: str,
    top_k: int,
    tenant_id: str | None = None,
) -> list[ChunkHit]:
    dimension = int(query_vector.shape[0])
    # The cast and the model literal must match the partial index at plan time for HNSW to
    # be used; a bind parameter would not (a generic plan cannot prove the predicate).
    literal = model.replace("'", "''")
    async with transaction(db) as conn:
        # pgvector 0.8: keep scanning the graph when the status filter drops candidates.
        await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        # Relaxed order may return neighbours slightly out of order; the materialized CTE
        # puts them back in strict order (pgvector's documented pattern).
        rows = await conn.fetch(
            f"""WITH hits AS MATERIALIZED (
                    SELECT c.chunk_id, c.document_id, c.text, c.context, c.pages, c.headings,
                           d.filename,
                           c.embedding::vector({dimension}) <=> $1::vector({dimension})
                               AS distance
                    FROM chunks c JOIN documents d USING (document_id)
                    WHERE c.model = '{literal}' AND d.status = 'completed'
                      AND ($3::text IS NULL OR d.tenant_id = $3)
                    ORDER BY distance
                    LIMIT $2
                )
                SELECT * FROM hits ORDER BY distance""",
            query_vector,
            top_k,
            tenant_id,
        )
    return [
        ChunkHit(
            chunk_id=str(r["chunk_id"]),
            document_id=str(r["document_id"]),
            filename=r["filename"],
            text=r["text"],
            context=r["context"],
            pages=list(r["pages"]),
            headings=list(r["headings"]),
            score=1.0 - float(r["distance"]),
        )
        for r in rows
    ]


async def explain_search(db: Db, dimension: int, model: str) -> str:
    """The plan search would use; tests and benchmarks check it uses the HNSW index."""
    literal = model.replace("'", "''")
    probe = np.zeros(dimension, dtype=np.float32)
    probe[0] = 1.0
    async with transaction(db) as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(
            f"""EXPLAIN SELECT c.chunk_id FROM chunks c
                WHERE c.model = '{literal}'
                ORDER BY c.embedding::vector({dimension}) <=> $1::vector({dimension})
                LIMIT 5""",
            probe,
        )
    return "\n".join(r[0] for r in rows)
