"""What a tenant holds against its quotas: active runs, documents in flight, stored bytes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ._db import Db


@dataclass(frozen=True)
class TenantUsage:
    active_runs: int
    documents_in_flight: int
    stored_bytes: int  # of the distinct contents of the tenant's documents
    held: frozenset[str]  # which of the asked-about contents the tenant already holds


async def tenant_usage(db: Db, tenant_id: str, sha256s: Sequence[str] = ()) -> TenantUsage:
    """The tenant's usage; ``held`` says which of ``sha256s`` it stores already (whatever
    their documents' status: their bytes are kept until the document is deleted)."""
    row = await db.fetchrow(
        """WITH mine AS (
               SELECT DISTINCT ON (sha256) sha256, size_bytes
               FROM documents WHERE tenant_id = $1 ORDER BY sha256)
           SELECT (SELECT count(*) FROM runs
                   WHERE tenant_id = $1 AND status IN ('queued', 'running')) AS active_runs,
                  (SELECT count(*) FROM documents
                   WHERE tenant_id = $1 AND status IN ('queued', 'running')) AS in_flight,
                  (SELECT coalesce(sum(size_bytes), 0)::bigint FROM mine) AS stored_bytes,
                  (SELECT coalesce(array_agg(sha256), '{}') FROM mine
                   WHERE sha256 = ANY($2::text[])) AS held""",
        tenant_id,
        list(sha256s),
    )
    assert row is not None
    return TenantUsage(
        active_runs=row["active_runs"],
        documents_in_flight=row["in_flight"],
        stored_bytes=row["stored_bytes"],
        held=frozenset(row["held"]),
    )
