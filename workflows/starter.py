"""Starting a run's IndexingWorkflow: from an upload, again for a run whose start was lost,
or with a retry. What the API, the CLI and the reconciler call; the run's pipeline spec
goes in with it."""

from __future__ import annotations

import logging

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
from docindex.config import Settings
from docindex.ids import generation_workflow_id, run_workflow_id
from docindex.models import RetryRequest
from docindex.spec import PipelineSpec, resolve_spec

from . import names
from .generation import GenerationWorkflow
from .generation_contract import GenerationInput
from .indexing import IndexingWorkflow
from .indexing_contract import RetryAccepted, RunInput
from .options import RunOptions

log = logging.getLogger(__name__)


def run_options(settings: Settings) -> RunOptions:
    return RunOptions(
        cpu_task_queue=settings.cpu_task_queue,
        gpu_task_queue=settings.gpu_task_queue,
        workflow_task_queue=settings.workflow_task_queue,
        llm_task_queue=settings.llm_task_queue,
        embed_api_task_queue=settings.embed_api_task_queue,
        max_concurrent_documents=settings.max_concurrent_documents,
        documents_per_execution=settings.documents_per_run_execution,
        batch_documents=settings.batch_documents,
        batch_document_bytes=settings.batch_document_bytes,
        batch_min_run_documents=settings.batch_min_run_documents,
        side_by_side_min_run_documents=settings.side_by_side_min_run_documents,
        side_by_side_parallel=settings.side_by_side_parallel,
        max_parallel_ranges=settings.max_parallel_ranges,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        poison_max_attempts=settings.poison_max_attempts,
        large_task_queue=settings.large_task_queue,
        large_document_bytes=settings.large_document_bytes,
        document_deadline_s=settings.document_deadline_s,
        run_deadline_s=settings.run_deadline_s,
        queue_deadline_s=settings.queue_deadline_s,
    )


def run_input(
    settings: Settings,
    run_id: str,
    document_count: int,
    tenant_id: str = "default",
    spec: PipelineSpec | None = None,
    *,
    retry_only: bool = False,
    generation_id: str | None = None,
) -> RunInput:
    """A run's workflow input: its stored spec (None: the one the settings resolve to), the
    generation that spec is of, and the orchestration options of these settings."""
    return RunInput(
        run_id=run_id,
        document_count=document_count,
        spec=spec or resolve_spec(settings),
        options=run_options(settings),
        tenant_id=tenant_id,
        retry_only=retry_only,
        generation_id=generation_id,
    )


def tenant_priority(tenant_id: str) -> Priority:
    """Every task of a run (its children and activities inherit this) is dispatched under
    its tenant's fairness key, so one tenant's backlog cannot starve another tenant."""
    return Priority(fairness_key=tenant_id)


def _attributes(run_id: str, tenant_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.INDEXING_RUN_ID, run_id),
            SearchAttributePair(sa.TENANT_ID, tenant_id),
        ]
    )


async def start_run(
    client: Client,
    settings: Settings,
    run_id: str,
    document_count: int,
    tenant_id: str = "default",
    uploaded_by: str | None = None,
    *,
    spec: PipelineSpec | None = None,
    generation_id: str | None = None,
) -> bool:
    """Start the run's IndexingWorkflow with the spec stored on its row (None: the one the
    settings resolve to); False if it was already started.

    The workflow id is derived from the run id and reuse is rejected, so calling this twice
    (an upload racing the reconciler, say) never indexes a run twice.
    """
    try:
        await client.start_workflow(
            IndexingWorkflow.run,
            run_input(
                settings, run_id, document_count, tenant_id, spec, generation_id=generation_id
            ),
            id=run_workflow_id(run_id),
            task_queue=settings.workflow_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"indexing run of {document_count} documents for {tenant_id}",
            # Who uploaded, for the operator in the UI: the key's id, never the key.
            memo={"document_count": document_count, "tenant": tenant_id, "api_key": uploaded_by},
            priority=tenant_priority(tenant_id),
            search_attributes=_attributes(run_id, tenant_id),
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
    *,
    spec: PipelineSpec | None = None,
    generation_id: str | None = None,
) -> RetryAccepted:
    """Send the ``retry`` Update to the run; if the run has closed, start a new execution
    of it (same workflow id, same spec) that receives the Update and indexes just those
    documents."""
    start = WithStartWorkflowOperation(
        IndexingWorkflow.run,
        run_input(
            settings,
            run_id,
            document_count,
            tenant_id,
            spec,
            retry_only=True,
            generation_id=generation_id,
        ),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"retry of indexing run {run_id}",
        priority=tenant_priority(tenant_id),
        search_attributes=_attributes(run_id, tenant_id),
    )
    return await client.execute_update_with_start_workflow(
        names.RETRY_UPDATE, request, start_workflow_operation=start, result_type=RetryAccepted
    )


async def resume_orphaned_runs(
    pool: asyncpg.Pool, client: Client, settings: Settings, older_than_s: float = 30.0
) -> list[str]:
    """Start the workflow of every run that was recorded but never started.

    Uploads write blobs and rows before starting the workflow, so a crash in between leaves
    a ``queued`` run with everything it needs, its spec included; this picks it up. Returns
    the runs started.
    """
    started: list[str] = []
    for run in await repository.resumable_runs(pool, older_than_s):
        if await start_run(
            client,
            settings,
            run.run_id,
            run.document_count,
            run.tenant_id,
            spec=run.pipeline,
            generation_id=run.generation_id,
        ):
            log.warning("started orphaned run %s", run.run_id)
            started.append(run.run_id)
        # Started now or before (still queued behind a backlog): one start per run, not one
        # every pass for as long as its workers are away.
        await repository.mark_workflow_seen(pool, run.run_id)
    return started


async def start_generation(
    client: Client, settings: Settings, tenant_id: str, generation_id: str, spec: PipelineSpec
) -> None:
    """Start the GenerationWorkflow that builds a recorded generation, under the tenant's
    fairness key like its runs (its children inherit it)."""
    await client.start_workflow(
        GenerationWorkflow.run,
        GenerationInput(
            generation_id=generation_id,
            tenant_id=tenant_id,
            spec=spec,
            options=run_options(settings),
        ),
        id=generation_workflow_id(tenant_id, generation_id),
        task_queue=settings.workflow_task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=f"index generation {generation_id} of {tenant_id}",
        priority=tenant_priority(tenant_id),
        search_attributes=TypedSearchAttributes([SearchAttributePair(sa.TENANT_ID, tenant_id)]),
    )
