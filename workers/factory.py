"""Build the workers of one kind, each with exactly the activities its queue serves.

The kinds mirror the hardware they would run on in production: workflow workers are light
(orchestration, plus bookkeeping and the store step: Postgres I/O);
CPU workers parse and chunk; large workers do the same for big or poison documents, one at a
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
from collections.abc import AsyncIterator
from datetime import timedelta
from enum import StrEnum

from temporalio.client import Client
from temporalio.worker import Worker

from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.database import create_pool

log = logging.getLogger(__name__)


class Queue(StrEnum):
    WORKFLOW = "workflow"
    CPU = "cpu"
    LARGE = "large"
    GPU = "gpu"
    HOSTED = "hosted"


@contextlib.asynccontextmanager
async def build_workers(
    kind: Queue, client: Client, settings: Settings, database_url: str
) -> AsyncIterator[list[Worker]]:
    """Yield configured (not yet running) workers; close their resources afterwards."""
    blobs = BlobStore.from_settings(settings)
    pool = None
    workers: list[Worker] = []
    graceful = timedelta(seconds=settings.worker_graceful_shutdown_s)
    if kind is Queue.WORKFLOW:
        from activities.bookkeeping import Bookkeeping
        from activities.storing import StoreSteps
        from workflows.document import DocumentWorkflow
        from workflows.indexing import IndexingWorkflow

        from .bytecode import compile_workflow_modules

        compile_workflow_modules()
        pool = await create_pool(database_url, max_size=8)
        workers.append(
            Worker(
                client,
                task_queue=settings.workflow_task_queue,
                workflows=[IndexingWorkflow, DocumentWorkflow],
                # Postgres I/O only: bookkeeping and the store step, as local activities
                # (and as activities, for workflows started before that change).
                activities=[
                    *Bookkeeping(pool).all(),
                    *StoreSteps(blobs, pool, settings.prices).all(),
                ],
                graceful_shutdown_timeout=graceful,
            )
        )
    elif kind in (Queue.CPU, Queue.LARGE):
        from activities.document_steps import DocumentSteps
        from docindex.pipeline.chunking import DocumentChunker
        from docindex.pipeline.parsing import DocumentParser, ParseLimits

        large = kind is Queue.LARGE
        if large and not settings.large_task_queue:
            raise SystemExit("DOCINDEX_LARGE_TASK_QUEUE is required for a large worker")
        concurrency = (
            settings.large_worker_concurrency if large else settings.cpu_worker_concurrency
        )
        # Built once per process, before polling: a misconfigured pipeline fails here.
        parser = DocumentParser(
            settings.pdf_pipeline,
            limits=ParseLimits(
                max_bytes=settings.large_max_document_bytes
                if large
                else settings.max_document_bytes,
                max_pages=settings.large_max_document_pages
                if large
                else settings.max_document_pages,
                time_budget_s=settings.parse_timeout_s,
            ),
            ocr=settings.pdf_ocr,
            table_structure=settings.pdf_table_structure,
            recover_damaged=settings.recover_damaged_files,
        )
        chunker = DocumentChunker(settings.chunk_max_tokens)
        pool = await create_pool(database_url, max_size=concurrency + 2)
        if settings.test_crash_on_sha256:
            log.warning(
                "TEST HOOK ON: this worker kills itself parsing %s", settings.test_crash_on_sha256
            )
        steps = DocumentSteps(
            blobs,
            pool,
            parser,
            chunker,
            checkpoint_pages=settings.parse_checkpoint_pages,
            prices=settings.prices,
            crash_on_sha256=settings.test_crash_on_sha256,
            checkpoint_delay_s=settings.test_checkpoint_delay_s,
        )
        workers.append(
            Worker(
                client,
                task_queue=settings.large_task_queue if large else settings.cpu_task_queue,
                activities=steps.all(),
                max_concurrent_activities=concurrency,
                graceful_shutdown_timeout=graceful,
            )
        )
    elif kind is Queue.GPU:
        from activities.embedding import EmbeddingSteps
        from docindex.pipeline.embedders import build_embedder

        local = settings.model_copy(update={"embedder": "local"})
        workers.append(
            Worker(
                client,
                task_queue=settings.gpu_task_queue,
                activities=EmbeddingSteps(blobs, build_embedder(local)).all(),
                # Many concurrent requests are what the micro-batcher coalesces.
                max_concurrent_activities=settings.gpu_worker_concurrency,
                graceful_shutdown_timeout=graceful,
            )
        )
    else:
        from activities.embedding import EmbeddingSteps
        from activities.enrichment import Enrichment
        from docindex.pipeline.embedders import build_embedder
        from docindex.pipeline.enrichment import build_enricher

        enricher = build_enricher(settings)
        workers.append(
            Worker(
                client,
                task_queue=settings.llm_task_queue,
                activities=Enrichment(blobs, enricher).all(),
                # Applies to the queue as a whole, across every worker polling it. Each context
                # activity makes context_chunks_per_activity calls, so scale the rate down.
                max_task_queue_activities_per_second=(
                    settings.anthropic_requests_per_second / settings.context_chunks_per_activity
                ),
                graceful_shutdown_timeout=graceful,
            )
        )
        if settings.embedder == "voyage":
            workers.append(
                Worker(
                    client,
                    task_queue=settings.embed_api_task_queue,
                    activities=EmbeddingSteps(blobs, build_embedder(settings)).all(),
                    max_task_queue_activities_per_second=settings.voyage_requests_per_second,
                    graceful_shutdown_timeout=graceful,
                )
            )
    log.info("%s worker ready on %s", kind.value, ", ".join(w.task_queue for w in workers))
    try:
        yield workers
    finally:
        if pool is not None:
            await pool.close()
