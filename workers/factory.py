"""Build the workers of one kind, each with exactly the activities its queue serves.

The kinds mirror the hardware they would run on in production: workflow workers are light;
CPU workers parse and chunk; GPU workers hold the local embedding model; hosted workers call
paid APIs (Anthropic, Voyage) on task queues whose rate is limited for all workers together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
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
    if kind is Queue.WORKFLOW:
        from activities.bookkeeping import Bookkeeping
        from workflows.document import DocumentWorkflow
        from workflows.indexing import IndexingWorkflow

        pool = await create_pool(database_url, max_size=5)
        workers.append(
            Worker(
                client,
                task_queue=settings.workflow_task_queue,
                workflows=[IndexingWorkflow, DocumentWorkflow],
                activities=Bookkeeping(pool).all(),
            )
        )
    elif kind is Queue.CPU:
        from activities.document_steps import DocumentSteps
        from docindex.pipeline.chunking import DocumentChunker
        from docindex.pipeline.parsing import DocumentParser, ParseLimits

        # Built once per process, before polling: a misconfigured pipeline fails here.
        parser = DocumentParser(
            settings.pdf_pipeline,
            limits=ParseLimits(
                max_bytes=settings.max_document_bytes,
                max_pages=settings.max_document_pages,
                time_budget_s=settings.parse_timeout_s,
            ),
            ocr=settings.pdf_ocr,
            table_structure=settings.pdf_table_structure,
        )
        chunker = DocumentChunker(settings.chunk_max_tokens)
        pool = await create_pool(database_url, max_size=settings.cpu_worker_concurrency + 2)
        steps = DocumentSteps(
            blobs,
            pool,
            parser,
            chunker,
            checkpoint_pages=settings.parse_checkpoint_pages,
            prices=settings.prices,
        )
        workers.append(
            Worker(
                client,
                task_queue=settings.cpu_task_queue,
                activities=steps.all(),
                max_concurrent_activities=settings.cpu_worker_concurrency,
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
            )
        )
    else:
        from activities.embedding import EmbeddingSteps
        from activities.enrichment import Enrichment
        from docindex.pipeline.embedders import build_embedder
        from docindex.pipeline.enrichment import AnthropicEnricher

        key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
        enricher = (
            AnthropicEnricher(
                key,
                settings.enrich_model,
                settings.anthropic_base_url,
                max_document_chars=settings.enrich_document_chars,
            )
            if settings.enricher == "anthropic" and key
            else None
        )
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
            )
        )
        if settings.embedder == "voyage":
            workers.append(
                Worker(
                    client,
                    task_queue=settings.embed_api_task_queue,
                    activities=EmbeddingSteps(blobs, build_embedder(settings)).all(),
                    max_task_queue_activities_per_second=settings.voyage_requests_per_second,
                )
            )
    log.info("%s worker ready on %s", kind.value, ", ".join(w.task_queue for w in workers))
    try:
        yield workers
    finally:
        if pool is not None:
            await pool.close()
