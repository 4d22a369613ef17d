"""Every SQL statement docindex runs, as plain async functions over an asyncpg pool."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import numpy as np

from docindex.ids import slug
from docindex.models import DocStatus, DocumentTask, RunState


@dataclass(frozen=True)
class NewDocument:
    document_id: str
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str
    password_key: str | None = None


@dataclass(frozen=True)
class ChunkRow:
    chunk_id: uuid.UUID
    ordinal: int
    text: str
    embed_text: str
    headings: list[str]
    pages: list[int]
    context: str | None = None


async def create_run(
    pool: asyncpg.Pool,
    run_id: str,
    workflow_id: str,
    documents: Sequence[NewDocument],
    trace_id: str | None = None,
    *,
    tenant_id: str = "default",
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
) -> None:
    """Record a run and its documents in one transaction. Raises
    ``asyncpg.UniqueViolationError`` when the tenant already used ``idempotency_key``."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO runs (run_id, workflow_id, document_count, trace_id, tenant_id,
                                 idempotency_key, request_fingerprint)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            uuid.UUID(run_id),
            workflow_id,
            len(documents),
            trace_id,
            tenant_id,
            idempotency_key,
            fingerprint,
        )
        await conn.executemany(
            """INSERT INTO documents
                   (document_id, run_id, seq, filename, sha256, size_bytes, blob_key,
                    password_key, tenant_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
            [
                (
                    uuid.UUID(d.document_id),
                    uuid.UUID(run_id),
                    seq,
                    d.filename,
                    d.sha256,
                    d.size_bytes,
                    d.blob_key,
                    d.password_key,
                    tenant_id,
                )
                for seq, d in enumerate(documents)
            ],
        )


async def set_run_status(
    pool: asyncpg.Pool,
    run_id: str,
    status: RunState,
    *,
    completed: int | None = None,
    failed: int | None = None,
    cancelled: int | None = None,
    error: str | None = None,
) -> None:
    finished = status not in (RunState.QUEUED, RunState.RUNNING)
    await pool.execute(
        """UPDATE runs SET status = $2,
                  completed = COALESCE($3, completed),
                  failed = COALESCE($4, failed),
                  cancelled = COALESCE($5, cancelled),
                  error = COALESCE($6, error),
                  updated_at = now(),
                  finished_at = CASE WHEN $7 THEN now() ELSE finished_at END
           WHERE run_id = $1""",
        uuid.UUID(run_id),
        status.value,
        completed,
        failed,
        cancelled,
        error,
        finished,
    )


async def fetch_documents(
    pool: asyncpg.Pool, run_id: str, after_seq: int, limit: int
) -> list[DocumentTask]:
    rows = await pool.fetch(
        """SELECT document_id, seq, filename, sha256, size_bytes, blob_key, password_key
           FROM documents
           WHERE run_id = $1 AND seq >= $2 ORDER BY seq LIMIT $3""",
        uuid.UUID(run_id),
        after_seq,
        limit,
    )
    return [_task(run_id, r) for r in rows]


def _task(run_id: str, row: asyncpg.Record) -> DocumentTask:
    return DocumentTask(
        run_id=run_id,
        document_id=str(row["document_id"]),
        seq=row["seq"],
        filename=row["filename"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        blob_key=row["blob_key"],
        password_key=row["password_key"],
    )


async def get_run(
    pool: asyncpg.Pool, run_id: str, tenant_id: str | None = None
) -> dict[str, Any] | None:
    """The run; with ``tenant_id``, only if that tenant owns it."""
    row = await pool.fetchrow(
        "SELECT * FROM runs WHERE run_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        uuid.UUID(run_id),
        tenant_id,
    )
    return dict(row) if row else None


async def run_by_idempotency_key(
    pool: asyncpg.Pool, tenant_id: str, key: str
) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        "SELECT * FROM runs WHERE tenant_id = $1 AND idempotency_key = $2", tenant_id, key
    )
    return dict(row) if row else None


async def active_runs(pool: asyncpg.Pool, tenant_id: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM runs WHERE tenant_id = $1 AND status IN ('queued', 'running')",
        tenant_id,
    )


async def indexed_documents(
    pool: asyncpg.Pool, tenant_id: str, sha256s: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The tenant's newest document for each of these contents that is indexed or on its
    way (failed, cancelled or quarantined ones do not count: those bytes may be retried)."""
    rows = await pool.fetch(
        """SELECT DISTINCT ON (sha256) document_id, run_id, sha256, filename, size_bytes,
                  status
           FROM documents
           WHERE tenant_id = $1 AND sha256 = ANY($2::text[])
             AND status IN ('queued', 'running', 'completed')
           ORDER BY sha256, created_at DESC""",
        tenant_id,
        list(sha256s),
    )
    return {r["sha256"]: dict(r) for r in rows}


async def list_run_documents(pool: asyncpg.Pool, run_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT document_id, filename, sha256, size_bytes, status, pages, chunk_count,
                  error_type, error, tokens, cost_usd
           FROM documents WHERE run_id = $1 ORDER BY seq""",
        uuid.UUID(run_id),
    )
    return [{**dict(r), "tokens": json.loads(r["tokens"] or "{}")} for r in rows]


async def get_document(
    pool: asyncpg.Pool, document_id: str, tenant_id: str | None = None
) -> dict[str, Any] | None:
    """The document; with ``tenant_id``, only if that tenant owns it."""
    row = await pool.fetchrow(
        "SELECT * FROM documents WHERE document_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        uuid.UUID(document_id),
        tenant_id,
    )
    if row is None:
        return None
    doc = dict(row)
    doc["metadata"] = json.loads(doc["metadata"]) if doc["metadata"] else {}
    doc["tokens"] = json.loads(doc["tokens"]) if doc["tokens"] else {}
    return doc


async def record_outcome(
    pool: asyncpg.Pool,
    document_id: str,
    status: DocStatus,
    error_type: str | None,
    error: str | None,
) -> None:
    """Record a document that ended without being stored (failed or cancelled).

    Its chunks go too: no half-indexed document is ever searchable.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM chunks WHERE document_id = $1", uuid.UUID(document_id))
        await conn.execute(
            """UPDATE documents SET status = $2, error_type = $3, error = $4, chunk_count = 0,
                      updated_at = now()
               WHERE document_id = $1""",
            uuid.UUID(document_id),
            status.value,
            error_type,
            error,
        )


async def requeue_documents(
    pool: asyncpg.Pool,
    run_id: str,
    document_ids: list[str] | None,
    error_types: list[str] | None,
    include_completed: bool,
    include_queued: bool = False,
) -> list[tuple[DocumentTask, DocStatus]]:
    """Put finished documents of a run back in the queue, and the run back to running.

    Only documents that are done (failed, cancelled or quarantined, and completed if asked)
    qualify: a document still being indexed is never started twice.
    """
    statuses = [
        "failed",
        "cancelled",
        "quarantined",
        *(["completed"] if include_completed else []),
        *(["queued"] if include_queued else []),
    ]
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """UPDATE documents d SET status = 'queued', error_type = NULL, error = NULL,
                      updated_at = now()
               FROM documents old
               WHERE d.document_id = old.document_id AND d.run_id = $1
                 AND old.status = ANY($2::text[])
                 AND ($3::uuid[] IS NULL OR d.document_id = ANY($3::uuid[]))
                 AND ($4::text[] IS NULL OR old.error_type = ANY($4::text[]))
               RETURNING d.document_id, d.seq, d.filename, d.sha256, d.size_bytes,
                         d.blob_key, d.password_key, old.status AS previous""",
            uuid.UUID(run_id),
            statuses,
            [uuid.UUID(d) for d in document_ids] if document_ids is not None else None,
            error_types,
        )
        if rows:
            await conn.execute(
                """UPDATE runs SET status = 'running', finished_at = NULL, updated_at = now()
                   WHERE run_id = $1""",
                uuid.UUID(run_id),
            )
    return [
        (
            _task(run_id, r),
            DocStatus(r["previous"]),
        )
        for r in sorted(rows, key=lambda r: r["seq"])
    ]


async def count_run_documents(pool: asyncpg.Pool, run_id: str) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM documents WHERE run_id = $1 GROUP BY status",
        uuid.UUID(run_id),
    )
    return {r["status"]: r["n"] for r in rows}


async def runs_with_failures(
    pool: asyncpg.Pool, error_type: str, since: datetime | None, tenant_id: str | None = None
) -> list[str]:
    """Runs that have documents failed (or quarantined) with ``error_type`` (updated since
    ``since``)."""
    rows = await pool.fetch(
        """SELECT DISTINCT run_id FROM documents
           WHERE status IN ('failed', 'quarantined') AND error_type = $1
             AND ($2::timestamptz IS NULL OR updated_at >= $2)
             AND ($3::text IS NULL OR tenant_id = $3)""",
        error_type,
        since,
        tenant_id,
    )
    return [str(r["run_id"]) for r in rows]


async def delete_document(pool: asyncpg.Pool, document_id: str) -> int:
    """Delete a document and its chunks; return how many other documents share its bytes."""
    async with pool.acquire() as conn, conn.transaction():
        sha = await conn.fetchval(
            "DELETE FROM documents WHERE document_id = $1 RETURNING sha256",
            uuid.UUID(document_id),
        )
        return await conn.fetchval("SELECT count(*) FROM documents WHERE sha256 = $1", sha)


async def cancel_queued_documents(pool: asyncpg.Pool, run_id: str) -> int:
    """Documents of a cancelled run that never started end cancelled too."""
    rows = await pool.fetch(
        """UPDATE documents SET status = 'cancelled', error_type = 'Cancelled',
                  error = 'run cancelled before this document started', updated_at = now()
           WHERE run_id = $1 AND status = 'queued' RETURNING document_id""",
        uuid.UUID(run_id),
    )
    return len(rows)


async def store_document(
    pool: asyncpg.Pool,
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
        await ensure_vector_index(pool, model, dimension)
    doc_uuid = uuid.UUID(document_id)
    async with pool.acquire() as conn, conn.transaction():
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


async def ensure_vector_index(pool: asyncpg.Pool, model: str, dimension: int) -> None:
    name = vector_index_name(model, dimension)
    literal = model.replace("'", "''")
    try:
        await pool.execute(
            f"""CREATE INDEX IF NOT EXISTS {name} ON chunks
                USING hnsw ((embedding::vector({dimension})) vector_cosine_ops)
                WHERE model = '{literal}'"""
        )
    except asyncpg.UniqueViolationError:
        pass  # another worker created it at the same moment


async def search_chunks(
    pool: asyncpg.Pool,
    query_vector: np.ndarray,
    model: str,
    top_k: int,
    tenant_id: str | None = None,
) -> list[dict[str, Any]]:
    dimension = int(query_vector.shape[0])
    # The cast and the model literal must match the partial index at plan time for HNSW to
    # be used; a bind parameter would not (a generic plan cannot prove the predicate).
    literal = model.replace("'", "''")
    async with pool.acquire() as conn, conn.transaction():
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
    return [{**dict(r), "score": 1.0 - float(r["distance"])} for r in rows]


async def explain_search(pool: asyncpg.Pool, dimension: int, model: str) -> str:
    """The plan search would use; tests and benchmarks check it uses the HNSW index."""
    literal = model.replace("'", "''")
    probe = np.zeros(dimension, dtype=np.float32)
    probe[0] = 1.0
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(
            f"""EXPLAIN SELECT c.chunk_id FROM chunks c
                WHERE c.model = '{literal}'
                ORDER BY c.embedding::vector({dimension}) <=> $1::vector({dimension})
                LIMIT 5""",
            probe,
        )
    return "\n".join(r[0] for r in rows)


async def resumable_runs(pool: asyncpg.Pool, older_than_s: float) -> list[dict[str, Any]]:
    """Runs recorded but never picked up by a workflow (the API died in between)."""
    rows = await pool.fetch(
        """SELECT run_id, workflow_id, document_count, tenant_id FROM runs
           WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1)""",
        older_than_s,
    )
    return [dict(r) for r in rows]
