"""Starting a run's workflow: from an upload, or again for a run whose start was lost."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterable

import asyncpg
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from docindex import repository
from docindex import search_attributes as sa
from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.ids import run_workflow_id
from docindex.models import RetryAccepted, RetryRequest, RunInput
from docindex.temporal_client import pipeline_options
from workflows import names

log = logging.getLogger(__name__)


async def record_files(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    files: Iterable[tuple[str, bytes]],
    tenant_id: str = "default",
) -> tuple[str, list[str]]:
    """Store the files and record them as one queued run, without an upload's checks and
    deduplication (benchmarks and tests; the caller starts the run). Returns the run id
    and the document ids, in order."""
    docs = []
    for name, data in files:
        key, sha, size = await blobs.put_upload(io.BytesIO(data))
        docs.append(
            repository.NewDocument(
                document_id=str(uuid.uuid4()),
                filename=name,
                sha256=sha,
                size_bytes=size,
                blob_key=key,
            )
        )
    run_id = str(uuid.uuid4())
    await repository.create_run(pool, run_id, run_workflow_id(run_id), docs, tenant_id=tenant_id)
    return run_id, [d.document_id for d in docs]


def tenant_priority(tenant_id: str) -> Priority:
    """Every task of a run (its children and activities inherit this) is dispatched under
    its tenant's fairness key, so one tenant's backlog cannot starve another tenant."""
    return Priority(fairness_key=tenant_id)


async def start_run(
    client: Client,
    settings: Settings,
    run_id: str,
    document_count: int,
    tenant_id: str = "default",
    uploaded_by: str | None = None,
) -> bool:
    """Start the run's IndexingWorkflow; False if it was already started.

    The workflow id is derived from the run id and reuse is rejected, so calling this twice
    (an upload racing the reconciler, say) never indexes a run twice.
    """
    try:
        await client.start_workflow(
            "IndexingWorkflow",
            RunInput(
                run_id=run_id,
                document_count=document_count,
                options=pipeline_options(settings),
                tenant_id=tenant_id,
            ),
            id=run_workflow_id(run_id),
            task_queue=settings.workflow_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"indexing run of {document_count} documents for {tenant_id}",
            # Who uploaded, for the operator in the UI: the key's id, never the key.
            memo={"document_count": document_count, "tenant": tenant_id, "api_key": uploaded_by},
            priority=tenant_priority(tenant_id),
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(sa.INDEXING_RUN_ID, run_id),
                    SearchAttributePair(sa.TENANT_ID, tenant_id),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        return False
    return True


async def retry_run(
    client: Client,
    settings: Settings,
    run_id: str,
    document_count: int,
    request: RetryRequest,
    tenant_id: str = "default",
) -> RetryAccepted:
    """Send the ``retry`` Update to the run; if the run has closed, start a new execution
    of it (same workflow id) that receives the Update and indexes just those documents."""
    start = WithStartWorkflowOperation(
        "IndexingWorkflow",
        RunInput(
            run_id=run_id,
            document_count=document_count,
            options=pipeline_options(settings),
            tenant_id=tenant_id,
            retry_only=True,
        ),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"retry of indexing run {run_id}",
        priority=tenant_priority(tenant_id),
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(sa.INDEXING_RUN_ID, run_id),
                SearchAttributePair(sa.TENANT_ID, tenant_id),
            ]
        ),
    )
    return await client.execute_update_with_start_workflow(
        names.RETRY_UPDATE, request, start_workflow_operation=start, result_type=RetryAccepted
    )


async def resume_orphaned_runs(
    pool: asyncpg.Pool, client: Client, settings: Settings, older_than_s: float = 30.0
) -> list[str]:
    """Start the workflow of every run that was recorded but never started.

    Uploads write blobs and rows before starting the workflow, so a crash in between leaves
    a ``queued`` run with everything it needs; this picks it up. Returns the runs started.
    """
    started: list[str] = []
    for run in await repository.resumable_runs(pool, older_than_s):
        run_id = str(run["run_id"])
        if await start_run(client, settings, run_id, run["document_count"], run["tenant_id"]):
            log.warning("started orphaned run %s", run_id)
            started.append(run_id)
    return started
