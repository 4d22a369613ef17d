"""Index generations: a pipeline spec applied to all of a tenant's documents.

A tenant's search serves its one ``active`` generation. A new one is ``building`` while its
workflow derives every document into it, then ``ready``; promoting it makes it ``active``
and the one it replaces ``retired`` (kept, and kept up to date, so promoting it back rolls
back). A build that fails or is cancelled keeps no chunks.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from docindex.models import GenerationStatus
from docindex.spec import PipelineSpec

from ._db import Db, transaction

# Generations that hold a tenant's documents and must receive new ones: search serves the
# active one, a building or ready one is about to, a retired one is what a rollback goes to.
LIVE = (
    GenerationStatus.BUILDING,
    GenerationStatus.READY,
    GenerationStatus.ACTIVE,
    GenerationStatus.RETIRED,
)
# Promotion makes one of these active: a finished build, or the one a rollback returns to.
PROMOTABLE = (GenerationStatus.READY, GenerationStatus.RETIRED)


@dataclass(frozen=True)
class GenerationRow:
    generation_id: str
    tenant_id: str
    status: GenerationStatus
    spec: PipelineSpec
    workflow_id: str | None
    documents_total: int
    chunk_count: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    promoted_at: datetime | None = None
    error: str | None = None
    # From generation_documents (``with_progress``).
    documents_done: int = 0
    documents_failed: int = 0
    tokens: dict[str, Any] | None = None
    cost_usd: float = 0.0

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> GenerationRow:
        keys = r.keys()
        return cls(
            generation_id=str(r["generation_id"]),
            tenant_id=r["tenant_id"],
            status=GenerationStatus(r["status"]),
            spec=PipelineSpec.model_validate_json(r["pipeline"]),
            workflow_id=r["workflow_id"],
            documents_total=r["documents_total"],
            chunk_count=r["chunk_count"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            finished_at=r["finished_at"],
            promoted_at=r["promoted_at"],
            error=r["error"],
            documents_done=r["documents_done"] if "documents_done" in keys else 0,
            documents_failed=r["documents_failed"] if "documents_failed" in keys else 0,
            tokens=json.loads(r["tokens"]) if "tokens" in keys and r["tokens"] else None,
            cost_usd=r["cost_usd"] if "cost_usd" in keys and r["cost_usd"] else 0.0,
        )


class GenerationConflict(Exception):
    """The generation is not in a state that allows the change (see its message)."""


_WITH_PROGRESS = """
    SELECT g.*,
           coalesce(p.done, 0) AS documents_done, coalesce(p.failed, 0) AS documents_failed,
           p.tokens, coalesce(p.cost_usd, 0) AS cost_usd
    FROM generations g
    LEFT JOIN LATERAL (
        SELECT count(*) FILTER (WHERE gd.status = 'completed') AS done,
               count(*) FILTER (WHERE gd.status <> 'completed') AS failed,
               sum(gd.cost_usd) AS cost_usd,
               (SELECT jsonb_object_agg(k, v) FROM (
                    SELECT t.key AS k,
                           jsonb_build_object(
                               'input_tokens', sum(coalesce((t.value->>'input_tokens')::bigint, 0)),
                               'output_tokens',
                               sum(coalesce((t.value->>'output_tokens')::bigint, 0)),
                               'cost_usd', sum(coalesce((t.value->>'cost_usd')::float8, 0))
                           ) AS v
                    FROM generation_documents gt, jsonb_each(gt.tokens) AS t
                    WHERE gt.generation_id = g.generation_id
                    GROUP BY t.key) AS per_key) AS tokens
        FROM generation_documents gd WHERE gd.generation_id = g.generation_id
    ) AS p ON true
"""


async def get_generation(
    db: Db, generation_id: str, tenant_id: str | None = None
) -> GenerationRow | None:
    """The generation with its progress; with ``tenant_id``, only if that tenant owns it."""
    row = await db.fetchrow(
        _WITH_PROGRESS + " WHERE g.generation_id = $1 AND ($2::text IS NULL OR g.tenant_id = $2)",
        uuid.UUID(generation_id),
        tenant_id,
    )
    return GenerationRow.from_record(row) if row else None


async def list_generations(db: Db, tenant_id: str) -> list[GenerationRow]:
    """The tenant's generations with their progress, newest first."""
    rows = await db.fetch(
        _WITH_PROGRESS + " WHERE g.tenant_id = $1 ORDER BY g.created_at DESC, g.generation_id",
        tenant_id,
    )
    return [GenerationRow.from_record(r) for r in rows]


async def active_generation(db: Db, tenant_id: str) -> GenerationRow | None:
    row = await db.fetchrow(
        "SELECT * FROM generations WHERE tenant_id = $1 AND status = 'active'", tenant_id
    )
    return GenerationRow.from_record(row) if row else None


async def ensure_active_generation(db: Db, tenant_id: str, spec: PipelineSpec) -> GenerationRow:
    """The tenant's active generation; its first one, made from ``spec``, if it has none."""
    found = await active_generation(db, tenant_id)
    if found is not None:  # every request but a tenant's first: one read, no write
        return found
    async with transaction(db) as conn:
        await conn.execute(
            """INSERT INTO generations (generation_id, tenant_id, status, pipeline,
                                        pipeline_digest, promoted_at)
               VALUES ($1, $2, 'active', $3::jsonb, $4, now())
               ON CONFLICT DO NOTHING""",
            uuid.uuid4(),
            tenant_id,
            spec.model_dump_json(),
            spec.digest,
        )
        found = await active_generation(conn, tenant_id)
    assert found is not None
    return found


async def create_generation(
    db: Db, generation_id: str, tenant_id: str, spec: PipelineSpec, workflow_id: str
) -> GenerationRow:
    """Record a new generation, building. Only one builds at a time per tenant: a second
    raises ``GenerationConflict``."""
    async with transaction(db) as conn:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _TENANT_GENERATIONS_LOCK, tenant_id
        )
        building = await conn.fetchval(
            "SELECT generation_id FROM generations WHERE tenant_id = $1 AND status = 'building'",
            tenant_id,
        )
        if building is not None:
            raise GenerationConflict(
                f"generation {building} is still building; cancel it or wait for it"
            )
        row = await conn.fetchrow(
            """INSERT INTO generations (generation_id, tenant_id, status, pipeline,
                                        pipeline_digest, workflow_id)
               VALUES ($1, $2, 'building', $3::jsonb, $4, $5) RETURNING *""",
            uuid.UUID(generation_id),
            tenant_id,
            spec.model_dump_json(),
            spec.digest,
            workflow_id,
        )
    return GenerationRow.from_record(row)


_TENANT_GENERATIONS_LOCK = 0x67656E73


async def live_generations(db: Db, tenant_id: str) -> list[GenerationRow]:
    """Generations a new document of the tenant must be indexed into."""
    rows = await db.fetch(
        """SELECT * FROM generations WHERE tenant_id = $1 AND status = ANY($2::text[])
           ORDER BY created_at, generation_id""",
        tenant_id,
        [s.value for s in LIVE],
    )
    return [GenerationRow.from_record(r) for r in rows]


@dataclass(frozen=True)
class DocumentToDerive:
    """A completed document a generation does not have yet, with the parser spec of the run
    that indexed it (the generation reuses that parse)."""

    document_id: str
    run_id: str
    seq: int
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str
    password_key: str | None
    parser: dict[str, Any] | None


async def documents_to_derive(
    db: Db, generation_id: str, tenant_id: str, after: str | None, limit: int
) -> list[DocumentToDerive]:
    """The tenant's completed documents not yet derived into the generation, in document id
    order after ``after`` (keyset pagination)."""
    rows = await db.fetch(
        """SELECT d.document_id, d.run_id, d.seq, d.filename, d.sha256, d.size_bytes,
                  d.blob_key, d.password_key, r.pipeline->'parser' AS parser
           FROM documents d JOIN runs r USING (run_id)
           WHERE d.tenant_id = $2 AND d.status = 'completed'
             AND ($3::uuid IS NULL OR d.document_id > $3)
             AND NOT EXISTS (SELECT 1 FROM generation_documents gd
                             WHERE gd.generation_id = $1 AND gd.document_id = d.document_id
                               AND gd.status = 'completed')
           ORDER BY d.document_id LIMIT $4""",
        uuid.UUID(generation_id),
        tenant_id,
        uuid.UUID(after) if after else None,
        limit,
    )
    return [
        DocumentToDerive(
            document_id=str(r["document_id"]),
            run_id=str(r["run_id"]),
            seq=r["seq"],
            filename=r["filename"],
            sha256=r["sha256"],
            size_bytes=r["size_bytes"],
            blob_key=r["blob_key"],
            password_key=r["password_key"],
            parser=json.loads(r["parser"]) if r["parser"] else None,
        )
        for r in rows
    ]


async def count_completed_documents(db: Db, tenant_id: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM documents WHERE tenant_id = $1 AND status = 'completed'", tenant_id
    )


async def set_documents_total(db: Db, generation_id: str, total: int) -> None:
    await db.execute(
        "UPDATE generations SET documents_total = $2, updated_at = now() WHERE generation_id = $1",
        uuid.UUID(generation_id),
        total,
    )


async def finish_build(
    db: Db, generation_id: str, status: GenerationStatus, error: str | None = None
) -> GenerationStatus:
    """End a build: ``ready``, or ``failed``/``cancelled`` (its chunks are deleted: they
    would never be served). A generation promoted meanwhile keeps its status; return the
    status it has now."""
    gid = uuid.UUID(generation_id)
    async with transaction(db) as conn:
        # Waits for stores into it in flight (they hold a key share lock); later ones see
        # its new status and store nothing into a failed or cancelled generation.
        await conn.execute("SELECT 1 FROM generations WHERE generation_id = $1 FOR UPDATE", gid)
        now = await conn.fetchval(
            """UPDATE generations SET status = $2, error = $3, finished_at = now(),
                      updated_at = now()
               WHERE generation_id = $1 AND status = 'building' RETURNING status""",
            gid,
            status.value,
            error,
        )
        if now is None:
            return GenerationStatus(
                await conn.fetchval("SELECT status FROM generations WHERE generation_id = $1", gid)
            )
        if status in (GenerationStatus.FAILED, GenerationStatus.CANCELLED):
            await conn.execute("DELETE FROM chunks WHERE generation_id = $1", gid)
            await conn.execute(
                "UPDATE generations SET chunk_count = 0 WHERE generation_id = $1", gid
            )
    return status


async def promote(db: Db, tenant_id: str, generation_id: str) -> tuple[GenerationRow, str | None]:
    """Make the generation the tenant's active one, and the active one retired, in one
    transaction: search switches at its commit. Return it and the id it replaced."""
    gid = uuid.UUID(generation_id)
    async with transaction(db) as conn:
        status = await _locked_status(conn, tenant_id, gid)
        if status == GenerationStatus.ACTIVE:
            row = await get_generation(conn, generation_id)
            assert row is not None
            return row, None
        if status not in PROMOTABLE:
            raise GenerationConflict(
                f"the generation is {status}; only a ready or retired one can be promoted"
            )
        previous = await conn.fetchval(
            """UPDATE generations SET status = 'retired', updated_at = now()
               WHERE tenant_id = $1 AND status = 'active' RETURNING generation_id""",
            tenant_id,
        )
        await conn.execute(
            """UPDATE generations SET status = 'active', promoted_at = now(), updated_at = now()
               WHERE generation_id = $1""",
            gid,
        )
        row = await get_generation(conn, generation_id)
    assert row is not None
    return row, str(previous) if previous else None


async def _locked_status(conn: asyncpg.Connection, tenant_id: str, generation: uuid.UUID) -> str:
    """The generation's status, under the tenant's generations lock (held until the
    transaction ends); ``LookupError`` when the tenant has no such generation."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _TENANT_GENERATIONS_LOCK, tenant_id
    )
    status = await conn.fetchval(
        "SELECT status FROM generations WHERE generation_id = $1 AND tenant_id = $2",
        generation,
        tenant_id,
    )
    if status is None:
        raise LookupError(str(generation))
    return status


async def delete_generation(db: Db, tenant_id: str, generation_id: str) -> None:
    """Delete a generation that is neither active nor building, with its chunks."""
    gid = uuid.UUID(generation_id)
    async with transaction(db) as conn:
        status = await _locked_status(conn, tenant_id, gid)
        if status in (GenerationStatus.ACTIVE, GenerationStatus.BUILDING):
            raise GenerationConflict(
                f"the generation is {status}: "
                + ("promote another one first" if status == "active" else "cancel it first")
            )
        # The row first: a store into it holds a share lock on it, so the deletion waits
        # for that store, and a later store finds no generation and writes nothing.
        await conn.execute("DELETE FROM generations WHERE generation_id = $1", gid)
        await conn.execute("DELETE FROM chunks WHERE generation_id = $1", gid)


async def record_generation_document(
    conn: asyncpg.Connection,
    generation_id: uuid.UUID,
    document_id: uuid.UUID,
    status: str,
    *,
    chunk_count: int = 0,
    tokens: dict[str, Any] | None = None,
    cost_usd: float = 0.0,
    error_type: str | None = None,
    error: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO generation_documents (generation_id, document_id, status, chunk_count,
                                             tokens, cost_usd, error_type, error)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8)
           ON CONFLICT (generation_id, document_id) DO UPDATE
           SET status = EXCLUDED.status, chunk_count = EXCLUDED.chunk_count,
               tokens = EXCLUDED.tokens, cost_usd = EXCLUDED.cost_usd,
               error_type = EXCLUDED.error_type, error = EXCLUDED.error, updated_at = now()""",
        generation_id,
        document_id,
        status,
        chunk_count,
        json.dumps(tokens or {}),
        cost_usd,
        error_type,
        error,
    )


async def record_derive_failure(
    db: Db, generation_id: str, document_id: str, status: str, error_type: str, error: str
) -> None:
    """A document that could not be derived into the generation: the generation keeps any
    chunks it had of it (a retried derive replaces them), and says why."""
    async with transaction(db) as conn:
        had = await conn.fetchval(
            """SELECT status FROM generation_documents
               WHERE generation_id = $1 AND document_id = $2""",
            uuid.UUID(generation_id),
            uuid.UUID(document_id),
        )
        if had == "completed":
            await conn.execute(
                """UPDATE generation_documents SET error_type = $3, error = $4,
                          updated_at = now()
                   WHERE generation_id = $1 AND document_id = $2""",
                uuid.UUID(generation_id),
                uuid.UUID(document_id),
                error_type,
                error,
            )
            return
        await record_generation_document(
            conn,
            uuid.UUID(generation_id),
            uuid.UUID(document_id),
            status,
            error_type=error_type,
            error=error,
        )


async def generation_for_document(db: Db, document_id: str) -> str:
    """The active generation of the document's tenant; for a tenant that has none yet (a
    run started without the API), its first one, made from the run's spec."""
    doc = uuid.UUID(document_id)
    found = await db.fetchval(
        """SELECT g.generation_id FROM documents d
           JOIN generations g ON g.tenant_id = d.tenant_id AND g.status = 'active'
           WHERE d.document_id = $1""",
        doc,
    )
    if found is None:
        await db.execute(
            """INSERT INTO generations (generation_id, tenant_id, status, pipeline,
                                        pipeline_digest, promoted_at)
               SELECT $2, d.tenant_id, 'active', coalesce(r.pipeline, '{}'::jsonb),
                      coalesce(r.pipeline_digest, ''), now()
               FROM documents d JOIN runs r USING (run_id) WHERE d.document_id = $1
               ON CONFLICT DO NOTHING""",
            doc,
            uuid.uuid4(),
        )
        found = await db.fetchval(
            """SELECT g.generation_id FROM documents d
               JOIN generations g ON g.tenant_id = d.tenant_id AND g.status = 'active'
               WHERE d.document_id = $1""",
            doc,
        )
    if found is None:
        raise LookupError(f"document {document_id} does not exist")
    return str(found)


async def other_live_generations(
    db: Db, document_id: str, generation_id: str
) -> list[GenerationRow]:
    """The live generations of the document's tenant other than ``generation_id``."""
    rows = await db.fetch(
        """SELECT g.* FROM documents d JOIN generations g ON g.tenant_id = d.tenant_id
           WHERE d.document_id = $1 AND g.generation_id <> $2 AND g.status = ANY($3::text[])
           ORDER BY g.created_at, g.generation_id""",
        uuid.UUID(document_id),
        uuid.UUID(generation_id),
        [s.value for s in LIVE],
    )
    return [GenerationRow.from_record(r) for r in rows]


async def save_eval_set(db: Db, tenant_id: str, name: str, queries: list[dict[str, Any]]) -> None:
    """Create or replace the tenant's eval set ``name``."""
    await db.execute(
        """INSERT INTO eval_sets (tenant_id, name, queries) VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (tenant_id, name) DO UPDATE
           SET queries = EXCLUDED.queries, updated_at = now()""",
        tenant_id,
        name,
        json.dumps(queries),
    )


async def get_eval_set(db: Db, tenant_id: str, name: str) -> list[dict[str, Any]] | None:
    raw = await db.fetchval(
        "SELECT queries FROM eval_sets WHERE tenant_id = $1 AND name = $2", tenant_id, name
    )
    return json.loads(raw) if raw is not None else None


async def list_eval_sets(db: Db, tenant_id: str) -> list[tuple[str, int, datetime]]:
    """(name, number of queries, updated_at) of the tenant's eval sets."""
    rows = await db.fetch(
        """SELECT name, jsonb_array_length(queries) AS n, updated_at FROM eval_sets
           WHERE tenant_id = $1 ORDER BY name""",
        tenant_id,
    )
    return [(r["name"], r["n"], r["updated_at"]) for r in rows]
