"""Build the workers of one kind, each with exactly the activities its queue serves.

The kinds mirror the hardware they would run on in production: workflow workers are light
(orchestration, plus bookkeeping and the store step: Postgres I/O); CPU workers parse and
chunk, with no database pool; large workers do the same for big or poison documents, one at a
time with bigger limits (a machine with more memory); GPU workers hold the local embedding
model; hosted workers call paid APIs (Anthropic, Voyage) on task queues whose rate is limited
for all workers together.

Every worker stops gracefully: on shutdown it stops polling and gives running activities
``worker_graceful_shutdown_s`` to finish; what is still running then is cancelled and handed
back to Temporal, which retries it on another worker at once (no heartbeat timeout to wait).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from docindex.blobstore import BlobStore
from docindex.cage import Cage, CageLimits
from docindex.components import Components
from docindex.config import Settings
from docindex.database import create_pool
from docindex.sources import StartRun
from docindex.spec import PipelineSpec

from .versioning import deployment_config

log = logging.getLogger(__name__)


class Queue(StrEnum):
    WORKFLOW = "workflow"
    CPU = "cpu"
    LARGE = "large"
    GPU = "gpu"
    HOSTED = "hosted"


@contextlib.asynccontextmanager
async def build_workers(
    kind: Queue,
    client: Client,
    settings: Settings,
    database_url: str,
    *,
    interceptors: Sequence[Interceptor] = (),
) -> AsyncIterator[list[Worker]]:
    """Yield configured (not yet running) workers; close their resources afterwards.

    Each worker builds the pipeline's parts from the spec of the run it works for (see
    ``docindex.components``); its settings only say how it runs them."""
    blobs = BlobStore.from_settings(settings)
    pool = None
    cage: Cage | None = None
    workers: list[Worker] = []
    common: dict[str, Any] = {
        "graceful_shutdown_timeout": timedelta(seconds=settings.worker_graceful_shutdown_s),
        "interceptors": list(interceptors),
        # Every kind is a version of the deployment: see workers/versioning.py.
        "deployment_config": deployment_config(settings),
    }
    if kind is Queue.WORKFLOW:
        from activities.bookkeeping import Bookkeeping
        from activities.gc import GcActivities
        from activities.generations import GenerationBookkeeping
        from activities.sources import SourceActivities
        from activities.storing import StoreActivities
        from activities.webhooks import WebhookActivities
        from docindex.sources import SourceSync
        from docindex.steps.store import StoreSteps
        from workflows.batch import DocumentBatchWorkflow
        from workflows.document import DocumentWorkflow
        from workflows.gc import GcWorkflow
        from workflows.generation import GenerationWorkflow
        from workflows.indexing import IndexingWorkflow
        from workflows.source import SourceTickWorkflow, SourceWorkflow
        from workflows.webhook import WebhookWorkflow, wake_webhooks

        from .bytecode import compile_workflow_modules
        from .payloads import skip_payload_walks

        compile_workflow_modules()
        skip_payload_walks()
        pool = await create_pool(database_url, max_size=8)

        async def wake(webhook_ids: Sequence[str]) -> None:
            # Best effort: the deliveries are recorded, and an idle webhook workflow looks
            # for them on its own within its poll interval.
            if not webhook_ids:
                return
            try:
                await wake_webhooks(client, settings, webhook_ids)
            except Exception:
                log.warning("could not wake webhooks %s", webhook_ids, exc_info=True)

        workers.append(
            Worker(
                client,
                task_queue=settings.workflow_task_queue,
                workflows=[
                    IndexingWorkflow,
                    DocumentWorkflow,
                    DocumentBatchWorkflow,
                    GenerationWorkflow,
                    GcWorkflow,
                    SourceWorkflow,
                    SourceTickWorkflow,
                    WebhookWorkflow,
                ],
                # Postgres I/O only, run as local activities: bookkeeping and the store step
                # (and the outcome of a failed document, as an activity).
                activities=[
                    *Bookkeeping(pool, wake).all(),
                    *GenerationBookkeeping(pool).all(),
                    *StoreActivities(StoreSteps(blobs, pool, settings.prices), wake).all(),
                    # The blob store's GC sweep (GcWorkflow): Postgres and blob store I/O.
                    *GcActivities(pool, blobs).all(),
                    # Sources' syncs (SourceWorkflow): list, copy, record runs, start them.
                    *SourceActivities(
                        SourceSync(pool, blobs, settings, _run_starter(client, settings))
                    ).all(),
                    # Webhook deliveries (WebhookWorkflow): Postgres, then one HTTP POST.
                    *WebhookActivities(
                        pool,
                        allow_private=settings.webhook_allow_private_urls,
                        timeout_s=settings.webhook_timeout_s,
                    ).all(),
                ],
                **common,
            )
        )
    elif kind in (Queue.CPU, Queue.LARGE):
        from activities.parsing import ParseActivities
        from docindex.pipeline.parsing import ParseLimits
        from docindex.steps.prepare import PrepareSteps

        large = kind is Queue.LARGE
        if large and not settings.large_task_queue:
            raise SystemExit("DOCINDEX_LARGE_TASK_QUEUE is required for a large worker")
        limits = ParseLimits(
            max_bytes=settings.large_max_document_bytes if large else settings.max_document_bytes,
            max_pages=settings.large_max_document_pages if large else settings.max_document_pages,
            time_budget_s=settings.parse_timeout_s,
            archive=settings.archive_limits,
            max_stream_bytes=settings.pdf_max_stream_bytes,
            max_chunks=settings.max_document_chunks,
        )
        concurrency = (
            settings.large_worker_concurrency if large else settings.cpu_worker_concurrency
        )
        # Parsing runs in child processes, one per activity slot by default (docindex/cage.py).
        cage = Cage(
            CageLimits(
                processes=settings.parse_processes or concurrency,
                memory_bytes=settings.parse_memory_bytes,
                cpu_s=settings.parse_cpu_s,
            )
        )
        components = Components(settings, limits)
        # The parser and the chunker of the API's spec are built in every parse process
        # before polling: a worker that cannot build them fails here, not on its first
        # document. The worker's own chunker is built only for a parse made earlier.
        from docindex.spec import resolve_spec
        from docindex.steps import caged

        default = resolve_spec(settings)
        await cage.warm(caged.warm, default.parser, limits, default.chunker)
        workers.append(
            Worker(
                client,
                task_queue=settings.large_task_queue if large else settings.cpu_task_queue,
                activities=ParseActivities(PrepareSteps(blobs, components, cage)).all(),
                max_concurrent_activities=concurrency,
                **common,
            )
        )
    elif kind is Queue.GPU:
        from activities.embedding import EmbeddingActivities
        from docindex.pipeline.embedders import gpu_worker_concurrency
        from docindex.spec import LocalEmbedder, VoyageEmbedder, resolve_spec
        from docindex.steps.embed import EmbedSteps

        components = Components(settings)
        # The local model of the API's spec is loaded before polling (it takes seconds).
        default = resolve_spec(settings).embedder
        components.embedder(LocalEmbedder() if isinstance(default, VoyageEmbedder) else default)
        workers.append(
            Worker(
                client,
                task_queue=settings.gpu_task_queue,
                activities=EmbeddingActivities(EmbedSteps(blobs, components)).all(),
                # Many concurrent requests are what the micro-batcher coalesces.
                max_concurrent_activities=gpu_worker_concurrency(settings),
                **common,
            )
        )
    else:
        from activities.embedding import EmbeddingActivities
        from activities.enrichment import EnrichmentActivities
        from docindex.steps.embed import EmbedSteps
        from docindex.steps.enrich import EnrichSteps

        components = Components(settings)
        workers.append(
            Worker(
                client,
                task_queue=settings.llm_task_queue,
                activities=EnrichmentActivities(EnrichSteps(blobs, components)).all(),
                # Applies to the queue as a whole, across every worker polling it. Each context
                # activity makes context_chunks_per_activity calls, so scale the rate down.
                max_task_queue_activities_per_second=(
                    settings.anthropic_requests_per_second / settings.context_chunks_per_activity
                ),
                **common,
            )
        )
        workers.append(
            Worker(
                client,
                task_queue=settings.embed_api_task_queue,
                activities=EmbeddingActivities(EmbedSteps(blobs, components)).all(),
                max_task_queue_activities_per_second=settings.voyage_requests_per_second,
                **common,
            )
        )
    log.info("%s worker ready on %s", kind.value, ", ".join(w.task_queue for w in workers))
    try:
        yield workers
    finally:
        if cage is not None:
            cage.close()
        if pool is not None:
            await pool.close()


def _run_starter(client: Client, settings: Settings) -> StartRun:
    """How a source's sync starts the runs it records: as an upload does (the core does not
    import the workflows, so the worker hands it this)."""
    from temporalio.service import RPCError

    from workflows.starter import start_run

    async def start(
        run_id: str, document_count: int, tenant_id: str, spec: PipelineSpec, generation_id: str
    ) -> bool:
        try:
            return await start_run(
                client,
                settings,
                run_id,
                document_count,
                tenant_id,
                spec=spec,
                generation_id=generation_id,
            )
        except RPCError:
            # Recorded with its documents: the API's reconciler starts it once it can.
            log.exception("could not start run %s of a source now", run_id)
            return False

    return start
