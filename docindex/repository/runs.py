"""Runs: one upload's documents, indexed together under one workflow."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from docindex.models import RunState
from docindex.spec import PipelineSpec

from ._db import Db
from .documents import NewDocument
from .pages import Position

# The first key of the two-key advisory locks on a tenant's runs; two-key locks never meet
# the one-key lock of the schema migration.
_TENANT_RUNS_LOCK = 0x72756E73


@dataclass(frozen=True)
class RunRow:
    run_id: str
    workflow_id: str
    tenant_id: str
    status: RunState
    document_count: int
    completed: int
    failed: int
    cancelled: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    trace_id: str | None = None
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    # What its documents become; None for runs recorded before runs stored their spec.
    pipeline: PipelineSpec | None = None
    # The index generation whose spec it has; None for runs recorded before generations.
    generation_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status in (RunState.QUEUED, RunState.RUNNING)

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> RunRow:
        return cls(
            run_id=str(r["run_id"]),
            workflow_id=r["workflow_id"],
            tenant_id=r["tenant_id"],
            status=RunState(r["status"]),
            document_count=r["document_count"],
            completed=r["completed"],
            failed=r["failed"],
            cancelled=r["cancelled"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            finished_at=r["finished_at"],
            error=r["error"],
            trace_id=r["trace_id"],
            idempotency_key=r["idempotency_key"],
            request_fingerprint=r["request_fingerprint"],
            pipeline=PipelineSpec.model_validate_json(r["pipeline"]) if r["pipeline"] else None,
            generation_id=str(r["generation_id"]) if r["generation_id"] else None,
        )


async def create_run(
    db: Db,
    run_id: str,
    workflow_id: str,
    documents: Sequence[NewDocument],
    trace_id: str | None = None,
    *,
    spec: PipelineSpec,
    tenant_id: str = "default",
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    generation_id: str | None = None,
) -> None:
    """Record a run, the spec its documents are indexed with, and its documents (numbered in
    order, ``seq``), in one statement. Raises ``asyncpg.UniqueViolationError`` when the
    tenant already used ``idempotency_key``."""
    await db.execute(
        """WITH run AS (
               INSERT INTO runs (run_id, workflow_id, document_count, trace_id, tenant_id,
                                 idempotency_key, request_fingerprint, pipeline,
                                 pipeline_digest, generation_id)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
               RETURNING run_id)
           INSERT INTO documents (document_id, run_id, seq, filename, sha256, size_bytes,
                                  blob_key, password_key, tenant_id)
           SELECT d.document_id, run.run_id, d.n - 1, d.filename, d.sha256, d.size_bytes,
                  d.blob_key, d.password_key, $5
           FROM run, unnest($11::uuid[], $12::text[], $13::text[], $14::bigint[],
                            $15::text[], $16::text[])
                WITH ORDINALITY AS d(document_id, filename, sha256, size_bytes, blob_key,
                                     password_key, n)""",
        uuid.UUID(run_id),
        workflow_id,
        len(documents),
        trace_id,
        tenant_id,
        idempotency_key,
        fingerprint,
        spec.model_dump_json(),
        spec.digest,
        uuid.UUID(generation_id) if generation_id else None,
        [uuid.UUID(d.document_id) for d in documents],
        [d.filename for d in documents],
        [d.sha256 for d in documents],
        [d.size_bytes for d in documents],
        [d.blob_key for d in documents],
        [d.password_key for d in documents],
    )


async def lock_tenant_runs(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Hold the tenant's run lock until ``conn``'s transaction ends: uploads of one tenant
    then check its limit of active runs and record their run one after another."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _TENANT_RUNS_LOCK, tenant_id
    )


async def set_run_status(
    db: Db,
    run_id: str,
    status: RunState,
    *,
    completed: int | None = None,
    failed: int | None = None,
    cancelled: int | None = None,
    error: str | None = None,
) -> None:
    finished = status not in (RunState.QUEUED, RunState.RUNNING)
    await db.execute(
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


async def get_run(db: Db, run_id: str, tenant_id: str | None = None) -> RunRow | None:
    """The run; with ``tenant_id``, only if that tenant owns it."""
    row = await db.fetchrow(
        "SELECT * FROM runs WHERE run_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        uuid.UUID(run_id),
        tenant_id,
    )
    return RunRow.from_record(row) if row else None


async def run_by_idempotency_key(db: Db, tenant_id: str, key: str) -> RunRow | None:
    row = await db.fetchrow(
        "SELECT * FROM runs WHERE tenant_id = $1 AND idempotency_key = $2", tenant_id, key
    )
    return RunRow.from_record(row) if row else None


async def active_runs(db: Db, tenant_id: str) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM runs WHERE tenant_id = $1 AND status IN ('queued', 'running')",
        tenant_id,
    )


async def resumable_runs(db: Db, older_than_s: float) -> list[RunRow]:
    """Runs recorded but never picked up by a workflow (the API died in between), except
    those whose workflow the reconciler has already seen exist (queued behind a backlog)."""
    rows = await db.fetch(
        """SELECT * FROM runs
           WHERE status = 'queued' AND workflow_seen_at IS NULL
             AND created_at < now() - make_interval(secs => $1)""",
        older_than_s,
    )
    return [RunRow.from_record(r) for r in rows]


async def mark_workflow_seen(db: Db, run_id: str) -> None:
    """The run's workflow exists: the reconciler need not start it again."""
    await db.execute(
        "UPDATE runs SET workflow_seen_at = now() WHERE run_id = $1", uuid.UUID(run_id)
    )


def list_runs_query(
    tenant_id: str,
    *,
    status: RunState | None = None,
    after: Position | None = None,
    limit: int = 50,
) -> tuple[str, list[Any]]:
    """The statement ``list_runs`` runs (tests EXPLAIN it): the tenant's runs, newest
    first, in ``(created_at, run_id)`` order, from ``runs_tenant_created`` (or
    ``runs_tenant_status_created`` with a status)."""
    params: list[Any] = [tenant_id]
    conditions = ["tenant_id = $1"]
    if status is not None:
        params.append(status.value)
        conditions.append(f"status = ${len(params)}")
    if after is not None:
        params += [after.created_at, uuid.UUID(after.id)]
        conditions.append(f"(created_at, run_id) < (${len(params) - 1}, ${len(params)})")
    params.append(limit)
    sql = (
        f"SELECT * FROM runs WHERE {' AND '.join(conditions)} "
        f"ORDER BY created_at DESC, run_id DESC LIMIT ${len(params)}"
    )
    return sql, params


async def list_runs(
    db: Db,
    tenant_id: str,
    *,
    status: RunState | None = None,
    after: Position | None = None,
    limit: int = 50,
) -> list[RunRow]:
    """A page of the tenant's runs, newest first, after ``after`` (a page's last row)."""
    sql, params = list_runs_query(tenant_id, status=status, after=after, limit=limit)
    return [RunRow.from_record(r) for r in await db.fetch(sql, *params)]
