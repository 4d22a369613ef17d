"""Recording documents as a run: what an upload and a source's sync both do once the bytes
are stored.

The run gets the tenant's active generation's chunker, embedder and enricher (its first
generation is made from the settings) and the settings' parser. It is recorded in the
caller's transaction, under the tenant's run lock (``lock_tenant_runs``), after the tenant's
quotas are checked again there: two intakes at once may both pass a check made before the
bytes were stored, never both this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import asyncpg

from docindex import repository
from docindex.config import Settings
from docindex.ids import run_workflow_id
from docindex.repository import Db, NewDocument
from docindex.repository import sources as source_repo
from docindex.repository.quotas import TenantUsage, tenant_usage
from docindex.spec import PipelineSpec, resolve_spec


class Refused(Exception):
    """Refused as a whole; nothing of it was recorded."""


class TooManyActiveRuns(Refused):
    retry_after_s = 30


class TooManyDocumentsInFlight(Refused):
    retry_after_s = 30


class StorageQuotaExceeded(Refused):
    pass


def within_quotas(
    settings: Settings, tenant: str, usage: TenantUsage, fresh: Mapping[str, int]
) -> None:
    """Raise if recording ``fresh`` (new contents and their sizes) would pass a quota."""
    if usage.active_runs >= settings.tenant_max_active_runs:
        raise TooManyActiveRuns(
            f"tenant {tenant} already has {settings.tenant_max_active_runs} runs queued or "
            "running; wait for one to finish"
        )
    limit = settings.tenant_max_documents_in_flight
    if usage.documents_in_flight + len(fresh) > limit:
        raise TooManyDocumentsInFlight(
            f"tenant {tenant} has {usage.documents_in_flight} documents queued or running and "
            f"this adds {len(fresh)}, over its limit of {limit}; wait for some to finish"
        )
    added = sum(size for digest, size in fresh.items() if digest not in usage.held)
    quota = settings.tenant_max_stored_bytes
    if usage.stored_bytes + added > quota:
        raise StorageQuotaExceeded(
            f"tenant {tenant} stores {usage.stored_bytes} bytes and this adds {added}, "
            f"over its storage quota of {quota} bytes; delete documents to make room"
        )


async def run_spec(db: Db, settings: Settings, tenant: str) -> tuple[PipelineSpec, str]:
    """The spec a new run of the tenant gets, and the generation it is of."""
    configured = resolve_spec(settings)
    generation = await repository.ensure_active_generation(db, tenant, configured)
    spec = generation.spec.model_copy(update={"parser": configured.parser})
    return spec, generation.generation_id


async def record_run(
    conn: asyncpg.Connection,
    settings: Settings,
    tenant: str,
    run_id: str,
    documents: Sequence[NewDocument],
    *,
    spec: PipelineSpec,
    generation_id: str,
    trace_id: str | None = None,
    idempotency_key: str | None = None,
    fingerprint: str | None = None,
    replaced: Sequence[source_repo.NewContent] = (),
) -> None:
    """Record ``documents`` (and documents indexed before that have new bytes, ``replaced``)
    as the run ``run_id`` if the tenant stays within its quotas, else raise a ``Refused``.
    ``conn`` is in a transaction that holds the tenant's run lock."""
    sizes = {d.sha256: d.size_bytes for d in documents}
    sizes.update({d.sha256: d.size_bytes for d in replaced})
    usage = await tenant_usage(conn, tenant, list(sizes))
    # In flight counts documents, not contents: the same bytes twice are indexed twice.
    within_quotas(settings, tenant, usage, sizes)
    if usage.documents_in_flight + len(documents) + len(replaced) > (
        settings.tenant_max_documents_in_flight
    ):
        raise TooManyDocumentsInFlight(
            f"tenant {tenant} has {usage.documents_in_flight} documents queued or running; "
            f"wait for some to finish"
        )
    await repository.create_run(
        conn,
        run_id,
        run_workflow_id(run_id),
        list(documents),
        trace_id=trace_id,
        spec=spec,
        tenant_id=tenant,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        generation_id=generation_id,
    )
    if replaced:
        await source_repo.replace_contents(conn, run_id, tenant, len(documents), replaced)
