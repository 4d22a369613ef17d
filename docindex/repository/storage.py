"""What holds stored blobs: the SQL behind ``docindex.gc``.

A blob is held by document rows: a tenant's upload and step artifacts of one content hash
by any document of that tenant with that hash, a PDF password by any document row that
still names it (``documents.password_key``, cleared once the document is indexed).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from ._db import Db


@dataclass(frozen=True)
class Released:
    """What a deleted document held: its content hash, upload key and password key."""

    tenant_id: str
    run_id: str
    sha256: str
    blob_key: str
    password_key: str | None


async def delete_documents(
    conn: asyncpg.Connection, tenant_id: str, document_ids: Sequence[str]
) -> list[Released]:
    """Delete the tenant's documents (their chunks go with them); return what they held."""
    rows = await conn.fetch(
        """DELETE FROM documents WHERE tenant_id = $1 AND document_id = ANY($2::uuid[])
           RETURNING tenant_id, run_id, sha256, blob_key, password_key""",
        tenant_id,
        [uuid.UUID(d) for d in document_ids],
    )
    return [_released(r) for r in rows]


async def delete_run(conn: asyncpg.Connection, tenant_id: str, run_id: str) -> list[Released]:
    """Delete the tenant's run, its documents and their chunks; return what they held."""
    rows = await conn.fetch(
        """DELETE FROM documents WHERE tenant_id = $1 AND run_id = $2
           RETURNING tenant_id, run_id, sha256, blob_key, password_key""",
        tenant_id,
        uuid.UUID(run_id),
    )
    await conn.execute(
        "DELETE FROM runs WHERE tenant_id = $1 AND run_id = $2", tenant_id, uuid.UUID(run_id)
    )
    return [_released(r) for r in rows]


async def run_has_open_documents(db: Db, run_id: str) -> bool:
    return bool(
        await db.fetchval(
            """SELECT EXISTS (SELECT 1 FROM documents
                              WHERE run_id = $1 AND status IN ('queued', 'running'))""",
            uuid.UUID(run_id),
        )
    )


async def held_hashes(db: Db, tenant_id: str | None, sha256s: Sequence[str]) -> set[str]:
    """Which of these content hashes a document of the tenant still has (of any tenant
    when ``tenant_id`` is None: blobs stored before keys were the tenant's)."""
    rows = await db.fetch(
        """SELECT DISTINCT sha256 FROM documents
           WHERE sha256 = ANY($2::text[]) AND ($1::text IS NULL OR tenant_id = $1)""",
        tenant_id,
        list(sha256s),
    )
    return {r["sha256"] for r in rows}


async def held_password_keys(db: Db, keys: Sequence[tuple[str, str]]) -> set[str]:
    """Which of these (run id, password key) a document row still names. Read by run: the
    run's documents are one index lookup, the password column has no index."""
    if not keys:
        return set()
    rows = await db.fetch(
        """SELECT DISTINCT password_key FROM documents
           WHERE run_id = ANY($1::uuid[]) AND password_key = ANY($2::text[])""",
        list({uuid.UUID(run) for run, _ in keys}),
        [key for _, key in keys],
    )
    return {r["password_key"] for r in rows}


async def document_tenant(db: Db, document_id: str) -> str | None:
    return await db.fetchval(
        "SELECT tenant_id FROM documents WHERE document_id = $1", uuid.UUID(document_id)
    )


async def forget_password(conn: asyncpg.Connection, document_id: str) -> tuple[str, str] | None:
    """Clear the document's password key; return (run id, key) if it had one."""
    row = await conn.fetchrow(
        """WITH old AS (SELECT document_id, password_key FROM documents
                        WHERE document_id = $1 AND password_key IS NOT NULL FOR UPDATE)
           UPDATE documents d SET password_key = NULL FROM old
           WHERE d.document_id = old.document_id
           RETURNING d.run_id, old.password_key""",
        uuid.UUID(document_id),
    )
    return (str(row["run_id"]), row["password_key"]) if row else None


async def indexed_with_password(db: Db, limit: int) -> list[str]:
    """Indexed documents that still name a password (indexed by an earlier build, or the
    password's release failed): the collector releases them."""
    rows = await db.fetch(
        """SELECT document_id FROM documents
           WHERE status = 'completed' AND password_key IS NOT NULL LIMIT $1""",
        limit,
    )
    return [str(r["document_id"]) for r in rows]


def _released(r: asyncpg.Record) -> Released:
    return Released(
        tenant_id=r["tenant_id"],
        run_id=str(r["run_id"]),
        sha256=r["sha256"],
        blob_key=r["blob_key"],
        password_key=r["password_key"],
    )
