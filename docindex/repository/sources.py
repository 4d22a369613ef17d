"""Sources that sync themselves: a source's row, and what its listings saw of each object.

An object is ``pending`` while its current version (ETag, size, mtime) is not yet recorded
as a document of a run, ``recorded`` once it is, ``refused`` when its bytes cannot be
indexed (a refused format, over the size limit or the storage quota); a new version makes
it pending again. ``seen_sync`` is the number of the last listing that saw it: once a
listing completes, objects it did not see are gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._db import Db


@dataclass(frozen=True)
class SourceRow:
    source_id: str
    tenant_id: str
    url: str
    include: list[str]
    interval_s: float
    status: str  # active | stopped
    workflow_id: str
    sync_no: int
    synced_as_of: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> SourceRow:
        return cls(
            source_id=str(r["source_id"]),
            tenant_id=r["tenant_id"],
            url=r["url"],
            include=list(r["include"]),
            interval_s=r["interval_s"],
            status=r["status"],
            workflow_id=r["workflow_id"],
            sync_no=r["sync_no"],
            synced_as_of=r["synced_as_of"],
            last_error=r["last_error"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
        )


@dataclass(frozen=True)
class ListedObject:
    """One object as a listing (or a HEAD) sees it."""

    key: str
    etag: str | None
    size_bytes: int
    modified_at: datetime | None


@dataclass(frozen=True)
class SourceObject:
    key: str
    etag: str | None
    size_bytes: int
    modified_at: datetime | None
    document_id: str | None
    # The bytes its document holds now (None: no document, or not read).
    document_sha256: str | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> SourceObject:
        return cls(
            key=r["key"],
            etag=r["etag"],
            size_bytes=r["size_bytes"],
            modified_at=r["modified_at"],
            document_id=str(r["document_id"]) if r["document_id"] else None,
            document_sha256=r.get("document_sha256"),
        )


@dataclass(frozen=True)
class SourceCounts:
    objects: int
    indexed: int
    pending: int
    failed: int


@dataclass(frozen=True)
class NewContent:
    """New bytes for a document indexed before: it is indexed again in another run."""

    document_id: str
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str


async def create_source(
    db: Db,
    source_id: str,
    tenant_id: str,
    url: str,
    include: Sequence[str],
    interval_s: float,
    workflow_id: str,
) -> SourceRow:
    row = await db.fetchrow(
        """INSERT INTO sources (source_id, tenant_id, url, include, interval_s, workflow_id)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING *""",
        uuid.UUID(source_id),
        tenant_id,
        url,
        list(include),
        interval_s,
        workflow_id,
    )
    assert row is not None
    return SourceRow.from_record(row)


async def get_source(db: Db, source_id: str, tenant_id: str | None = None) -> SourceRow | None:
    """The source; with ``tenant_id``, only if that tenant owns it."""
    row = await db.fetchrow(
        "SELECT * FROM sources WHERE source_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        uuid.UUID(source_id),
        tenant_id,
    )
    return SourceRow.from_record(row) if row else None


async def list_sources(db: Db, tenant_id: str) -> list[SourceRow]:
    rows = await db.fetch(
        "SELECT * FROM sources WHERE tenant_id = $1 ORDER BY created_at", tenant_id
    )
    return [SourceRow.from_record(r) for r in rows]


async def stop_source(db: Db, source_id: str) -> None:
    await db.execute(
        "UPDATE sources SET status = 'stopped', updated_at = now() WHERE source_id = $1",
        uuid.UUID(source_id),
    )


async def set_source_error(db: Db, source_id: str, error: str | None) -> None:
    await db.execute(
        "UPDATE sources SET last_error = $2, updated_at = now() WHERE source_id = $1",
        uuid.UUID(source_id),
        error,
    )


async def begin_sync(db: Db, source_id: str) -> int:
    """Number a new listing of the source and note when it started."""
    return await db.fetchval(
        """UPDATE sources SET sync_no = sync_no + 1, sync_started_at = now(),
                  updated_at = now()
           WHERE source_id = $1 RETURNING sync_no""",
        uuid.UUID(source_id),
    )


async def finish_sync(db: Db, source_id: str, sync_no: int) -> None:
    """Everything the listing ``sync_no`` saw is recorded: the source is synced as of the
    moment that listing started (a change after it may not have been seen)."""
    await db.execute(
        """UPDATE sources SET synced_as_of = sync_started_at, last_error = NULL,
                  updated_at = now()
           WHERE source_id = $1 AND sync_no = $2""",
        uuid.UUID(source_id),
        sync_no,
    )


async def record_listed(db: Db, source_id: str, objects: Sequence[ListedObject]) -> int:
    """Note that the source's current listing saw ``objects``; a new object, or a new
    version of one, becomes pending. Returns how many became pending."""
    rows = await db.fetch(
        """INSERT INTO source_objects AS o (source_id, key, etag, size_bytes, modified_at,
                                            seen_sync, state)
           SELECT $1, l.key, l.etag, l.size_bytes, l.modified_at,
                  (SELECT sync_no FROM sources WHERE source_id = $1), 'pending'
           FROM unnest($2::text[], $3::text[], $4::bigint[], $5::timestamptz[])
                AS l (key, etag, size_bytes, modified_at)
           ON CONFLICT (source_id, key) DO UPDATE SET
               seen_sync = excluded.seen_sync,
               etag = excluded.etag,
               size_bytes = excluded.size_bytes,
               modified_at = excluded.modified_at,
               state = CASE WHEN (o.etag, o.size_bytes, o.modified_at)
                                 IS NOT DISTINCT FROM
                                 (excluded.etag, excluded.size_bytes, excluded.modified_at)
                            THEN o.state ELSE 'pending' END,
               error = CASE WHEN (o.etag, o.size_bytes, o.modified_at)
                                 IS NOT DISTINCT FROM
                                 (excluded.etag, excluded.size_bytes, excluded.modified_at)
                            THEN o.error END,
               updated_at = now()
           RETURNING o.state = 'pending' AS pending""",
        uuid.UUID(source_id),
        [o.key for o in objects],
        [o.etag for o in objects],
        [o.size_bytes for o in objects],
        [o.modified_at for o in objects],
    )
    return sum(1 for r in rows if r["pending"])


async def gone_objects(
    db: Db, source_id: str, sync_no: int | None = None, keys: Sequence[str] | None = None
) -> list[SourceObject]:
    """Objects the completed listing ``sync_no`` did not see, or these ``keys``."""
    rows = await db.fetch(
        """SELECT * FROM source_objects
           WHERE source_id = $1
             AND ($2::bigint IS NULL OR seen_sync < $2)
             AND ($3::text[] IS NULL OR key = ANY($3::text[]))
           ORDER BY key""",
        uuid.UUID(source_id),
        sync_no,
        list(keys) if keys is not None else None,
    )
    return [SourceObject.from_record(r) for r in rows]


async def forget_objects(db: Db, source_id: str, keys: Sequence[str]) -> None:
    await db.execute(
        "DELETE FROM source_objects WHERE source_id = $1 AND key = ANY($2::text[])",
        uuid.UUID(source_id),
        list(keys),
    )


async def pending_objects(db: Db, source_id: str, limit: int) -> list[SourceObject]:
    """Pending objects that can be recorded now: those whose document is being indexed
    wait until it is done (a document is never indexed twice at once). A recorded object
    whose document was deleted is pending again: the source is the truth."""
    rows = await db.fetch(
        """SELECT o.*, d.sha256 AS document_sha256 FROM source_objects o
           LEFT JOIN documents d ON d.document_id = o.document_id
           WHERE o.source_id = $1
             AND (o.state = 'pending' OR (o.state = 'recorded' AND o.document_id IS NULL))
             AND (d.document_id IS NULL OR d.status NOT IN ('queued', 'running'))
           ORDER BY o.key LIMIT $2""",
        uuid.UUID(source_id),
        limit,
    )
    return [SourceObject.from_record(r) for r in rows]


async def mark_recorded(
    conn: asyncpg.Connection, source_id: str, recorded: Sequence[tuple[SourceObject, str]]
) -> None:
    """These objects' versions are documents of a run now. One that changed again since it
    was picked stays pending: its newer version is recorded next."""
    await conn.executemany(
        """UPDATE source_objects SET state = 'recorded', document_id = $3, error = NULL,
                  updated_at = now()
           WHERE source_id = $1 AND key = $2
             AND (etag, size_bytes, modified_at) IS NOT DISTINCT FROM ($4, $5, $6)""",
        [
            (
                uuid.UUID(source_id),
                o.key,
                uuid.UUID(document_id),
                o.etag,
                o.size_bytes,
                o.modified_at,
            )
            for o, document_id in recorded
        ],
    )


async def mark_refused(db: Db, source_id: str, obj: SourceObject, error: str) -> None:
    """This version cannot be indexed; the next version of the object is tried again."""
    await db.execute(
        """UPDATE source_objects SET state = 'refused', error = $3, updated_at = now()
           WHERE source_id = $1 AND key = $2
             AND (etag, size_bytes, modified_at) IS NOT DISTINCT FROM ($4, $5, $6)""",
        uuid.UUID(source_id),
        obj.key,
        error[:2000],
        obj.etag,
        obj.size_bytes,
        obj.modified_at,
    )


async def replace_contents(
    conn: asyncpg.Connection,
    run_id: str,
    tenant_id: str,
    first_seq: int,
    docs: Sequence[NewContent],
) -> None:
    """Move documents indexed before into the new run ``run_id`` with their new bytes,
    queued. Their chunks stay, and search serves them, until the new ones are stored in
    the same transaction that removes them (``store_document``); a reindex that fails
    keeps them too (``record_outcome``). A document belongs to the run that indexed it
    last."""
    await conn.executemany(
        """UPDATE documents SET run_id = $2, seq = $3, filename = $4, sha256 = $5,
                  size_bytes = $6, blob_key = $7, status = 'queued', error_type = NULL,
                  error = NULL, updated_at = now()
           WHERE document_id = $1 AND tenant_id = $8""",
        [
            (
                uuid.UUID(d.document_id),
                uuid.UUID(run_id),
                first_seq + i,
                d.filename,
                d.sha256,
                d.size_bytes,
                d.blob_key,
                tenant_id,
            )
            for i, d in enumerate(docs)
        ],
    )
    await conn.execute(
        "UPDATE runs SET document_count = document_count + $2 WHERE run_id = $1",
        uuid.UUID(run_id),
        len(docs),
    )


async def source_counts(db: Db, source_id: str) -> SourceCounts:
    row = await db.fetchrow(
        """SELECT count(*) AS objects,
                  count(*) FILTER (WHERE o.state = 'recorded' AND d.status = 'completed')
                      AS indexed,
                  count(*) FILTER (WHERE o.state = 'pending'
                                      OR (o.state = 'recorded' AND d.document_id IS NULL)
                                      OR d.status IN ('queued', 'running')) AS pending,
                  count(*) FILTER (WHERE o.state = 'refused'
                                      OR (o.state = 'recorded'
                                          AND d.status IN ('failed', 'quarantined',
                                                           'cancelled'))) AS failed
           FROM source_objects o LEFT JOIN documents d ON d.document_id = o.document_id
           WHERE o.source_id = $1""",
        uuid.UUID(source_id),
    )
    assert row is not None
    return SourceCounts(
        objects=row["objects"], indexed=row["indexed"], pending=row["pending"], failed=row["failed"]
    )


async def source_documents(db: Db, source_id: str) -> list[tuple[str, bool]]:
    """The source's documents, and whether each is done (not queued or running)."""
    rows = await db.fetch(
        """SELECT d.document_id, d.status NOT IN ('queued', 'running') AS done
           FROM source_objects o JOIN documents d ON d.document_id = o.document_id
           WHERE o.source_id = $1""",
        uuid.UUID(source_id),
    )
    return [(str(r["document_id"]), r["done"]) for r in rows]


async def document_done(db: Db, document_id: str) -> bool:
    """Whether the document is not being indexed (or no longer exists)."""
    status = await db.fetchval(
        "SELECT status FROM documents WHERE document_id = $1", uuid.UUID(document_id)
    )
    return status not in ("queued", "running")
