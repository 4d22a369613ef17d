"""Documents: one row per uploaded file of a run, and its outcome."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from docindex.models import DocStatus, DocumentTask

from ._db import Db, transaction
from .chunks import filename_regex
from .pages import Position


@dataclass(frozen=True)
class NewDocument:
    """A document about to be recorded with its run."""

    document_id: str
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str
    password_key: str | None = None


@dataclass(frozen=True)
class DocumentRow:
    document_id: str
    run_id: str
    tenant_id: str
    seq: int
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str
    status: DocStatus
    created_at: datetime
    updated_at: datetime
    password_key: str | None = None
    pages: int | None = None
    chunk_count: int | None = None
    error_type: str | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Any] = field(default_factory=dict)
    cost_usd: float = 0.0
    # Why the latest reindex of this completed document did not take (it kept its chunks).
    last_error_type: str | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> DocumentRow:
        return cls(
            document_id=str(r["document_id"]),
            run_id=str(r["run_id"]),
            tenant_id=r["tenant_id"],
            seq=r["seq"],
            filename=r["filename"],
            sha256=r["sha256"],
            size_bytes=r["size_bytes"],
            blob_key=r["blob_key"],
            status=DocStatus(r["status"]),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            password_key=r["password_key"],
            pages=r["pages"],
            chunk_count=r["chunk_count"],
            error_type=r["error_type"],
            error=r["error"],
            metadata=json.loads(r["metadata"]) if r["metadata"] else {},
            tokens=json.loads(r["tokens"]) if r["tokens"] else {},
            cost_usd=r["cost_usd"],
            last_error_type=r["last_error_type"],
            last_error=r["last_error"],
            last_error_at=r["last_error_at"],
        )


async def fetch_documents(db: Db, run_id: str, after_seq: int, limit: int) -> list[DocumentTask]:
    """The run's documents from ``after_seq`` on that wait to be indexed: not those
    cancelled before they started (a cancel recorded here holds across the run's
    continue-as-new), nor those a retry already indexed."""
    rows = await db.fetch(
        """SELECT document_id, tenant_id, seq, filename, sha256, size_bytes, blob_key,
                  password_key
           FROM documents
           WHERE run_id = $1 AND seq >= $2 AND status = 'queued' ORDER BY seq LIMIT $3""",
        uuid.UUID(run_id),
        after_seq,
        limit,
    )
    return [_task(run_id, r) for r in rows]


async def fetch_requeued_documents(
    db: Db, run_id: str, before_seq: int, limit: int
) -> list[DocumentTask]:
    """Documents of the run before ``before_seq`` that wait to be indexed again: a retry
    queued them and the run continued-as-new before starting them."""
    rows = await db.fetch(
        """SELECT document_id, tenant_id, seq, filename, sha256, size_bytes, blob_key,
                  password_key
           FROM documents
           WHERE run_id = $1 AND seq < $2 AND status = 'queued' ORDER BY seq LIMIT $3""",
        uuid.UUID(run_id),
        before_seq,
        limit,
    )
    return [_task(run_id, r) for r in rows]


async def cancel_queued_document(db: Db, document_id: str) -> bool:
    """Record a document that has not been indexed yet as cancelled, so that no execution of
    its run starts it; False when it is past that (being indexed, or indexed before: a
    reindex is stopped by its workflow and keeps its chunks)."""
    row = await db.fetchval(
        """UPDATE documents SET status = 'cancelled', error_type = 'Cancelled',
                  error = 'cancelled by request before it started', updated_at = now()
           WHERE document_id = $1 AND status = 'queued'
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = $1)
           RETURNING document_id""",
        uuid.UUID(document_id),
    )
    return row is not None


def _task(run_id: str, row: asyncpg.Record) -> DocumentTask:
    return DocumentTask(
        run_id=run_id,
        document_id=str(row["document_id"]),
        tenant_id=row["tenant_id"],
        seq=row["seq"],
        filename=row["filename"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        blob_key=row["blob_key"],
        password_key=row["password_key"],
    )


async def indexed_documents(
    db: Db, tenant_id: str, sha256s: Sequence[str]
) -> dict[str, DocumentRow]:
    """The tenant's newest document for each of these contents that is indexed or on its
    way (failed, cancelled or quarantined ones do not count: those bytes may be retried)."""
    rows = await db.fetch(
        """SELECT DISTINCT ON (sha256) *
           FROM documents
           WHERE tenant_id = $1 AND sha256 = ANY($2::text[])
             AND status IN ('queued', 'running', 'completed')
           ORDER BY sha256, created_at DESC""",
        tenant_id,
        list(sha256s),
    )
    return {r["sha256"]: DocumentRow.from_record(r) for r in rows}


async def list_run_documents(db: Db, run_id: str) -> list[DocumentRow]:
    rows = await db.fetch(
        "SELECT * FROM documents WHERE run_id = $1 ORDER BY seq", uuid.UUID(run_id)
    )
    return [DocumentRow.from_record(r) for r in rows]


async def get_document(
    db: Db, document_id: str, tenant_id: str | None = None
) -> DocumentRow | None:
    """The document; with ``tenant_id``, only if that tenant owns it."""
    row = await db.fetchrow(
        "SELECT * FROM documents WHERE document_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        uuid.UUID(document_id),
        tenant_id,
    )
    return DocumentRow.from_record(row) if row else None


async def record_outcome(
    db: Db,
    document_id: str,
    status: DocStatus,
    error_type: str | None,
    error: str | None,
) -> DocStatus:
    """Record a document that ended without being stored (failed or cancelled); return the
    status it has now.

    A document indexed before (a reindex that failed or was cancelled) keeps its chunks
    and stays completed: search goes on serving what it had, and why the reindex did not
    take is kept beside it (``last_error``). Chunks are only ever written whole, by one
    transaction, so a document that has none was never searchable.
    """
    doc = uuid.UUID(document_id)
    async with transaction(db) as conn:
        indexed = await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM chunks WHERE document_id = $1)
                      OR EXISTS (SELECT 1 FROM generation_documents
                                 WHERE document_id = $1 AND status = 'completed')""",
            doc,
        )
        if indexed:
            await conn.execute(
                """UPDATE documents SET status = 'completed', last_error_type = $2,
                          last_error = $3, last_error_at = now(), updated_at = now()
                   WHERE document_id = $1""",
                doc,
                error_type,
                error,
            )
            return DocStatus.COMPLETED
        await conn.execute(
            """UPDATE documents SET status = $2, error_type = $3, error = $4, chunk_count = 0,
                      updated_at = now()
               WHERE document_id = $1""",
            doc,
            status.value,
            error_type,
            error,
        )
    return status


async def requeue_documents(
    db: Db,
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
    async with transaction(db) as conn:
        rows = await conn.fetch(
            """UPDATE documents d SET status = 'queued', error_type = NULL, error = NULL,
                      updated_at = now()
               FROM documents old
               WHERE d.document_id = old.document_id AND d.run_id = $1
                 AND old.status = ANY($2::text[])
                 AND ($3::uuid[] IS NULL OR d.document_id = ANY($3::uuid[]))
                 AND ($4::text[] IS NULL OR old.error_type = ANY($4::text[]))
               RETURNING d.document_id, d.tenant_id, d.seq, d.filename, d.sha256,
                         d.size_bytes, d.blob_key, d.password_key, old.status AS previous""",
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
        (_task(run_id, r), DocStatus(r["previous"])) for r in sorted(rows, key=lambda r: r["seq"])
    ]


async def count_run_documents(db: Db, run_id: str) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT status, count(*) AS n FROM documents WHERE run_id = $1 GROUP BY status",
        uuid.UUID(run_id),
    )
    return {r["status"]: r["n"] for r in rows}


async def runs_with_failures(
    db: Db, error_type: str, since: datetime | None, tenant_id: str | None = None
) -> list[str]:
    """Runs that have documents failed (or quarantined) with ``error_type`` (updated since
    ``since``)."""
    rows = await db.fetch(
        """SELECT DISTINCT run_id FROM documents
           WHERE status IN ('failed', 'quarantined') AND error_type = $1
             AND ($2::timestamptz IS NULL OR updated_at >= $2)
             AND ($3::text IS NULL OR tenant_id = $3)""",
        error_type,
        since,
        tenant_id,
    )
    return [str(r["run_id"]) for r in rows]


async def cancel_queued_documents(db: Db, run_id: str) -> int:
    """Documents of a cancelled run that never started end cancelled too."""
    rows = await db.fetch(
        """UPDATE documents SET status = 'cancelled', error_type = 'Cancelled',
                  error = 'run cancelled before this document started', updated_at = now()
           WHERE run_id = $1 AND status = 'queued' RETURNING document_id""",
        uuid.UUID(run_id),
    )
    return len(rows)


def list_documents_query(
    tenant_id: str,
    *,
    status: DocStatus | None = None,
    run_id: str | None = None,
    filename: str | None = None,
    created_after: datetime | None = None,
    after: Position | None = None,
    limit: int = 50,
) -> tuple[str, list[Any]]:
    """The statement ``list_documents`` runs (tests EXPLAIN it): the tenant's documents,
    newest first, in ``(created_at, document_id)`` order, from the index
    ``documents_tenant_created`` (or ``documents_tenant_status_created`` with a status)."""
    params: list[Any] = [tenant_id]
    conditions = ["tenant_id = $1"]

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    if status is not None:
        conditions.append(f"status = {param(status.value)}")
    if run_id is not None:
        conditions.append(f"run_id = {param(uuid.UUID(run_id))}")
    if filename is not None:
        conditions.append(f"filename ~* {param(filename_regex(filename))}")
    if created_after is not None:
        conditions.append(f"created_at > {param(created_after)}")
    if after is not None:
        # A row comparison, so the index's order serves it: strictly older than the
        # position, ties on created_at (one upload's documents share it) broken by id.
        conditions.append(
            f"(created_at, document_id) < ({param(after.created_at)}, {param(uuid.UUID(after.id))})"
        )
    sql = (
        f"SELECT * FROM documents WHERE {' AND '.join(conditions)} "
        f"ORDER BY created_at DESC, document_id DESC LIMIT {param(limit)}"
    )
    return sql, params


async def list_documents(
    db: Db,
    tenant_id: str,
    *,
    status: DocStatus | None = None,
    run_id: str | None = None,
    filename: str | None = None,
    created_after: datetime | None = None,
    after: Position | None = None,
    limit: int = 50,
) -> list[DocumentRow]:
    """A page of the tenant's documents, newest first, after ``after`` (a page's last row).
    ``filename`` is a glob as search takes it; ``ValueError`` when it is malformed."""
    sql, params = list_documents_query(
        tenant_id,
        status=status,
        run_id=run_id,
        filename=filename,
        created_after=created_after,
        after=after,
        limit=limit,
    )
    return [DocumentRow.from_record(r) for r in await db.fetch(sql, *params)]
