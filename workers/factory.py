"""Build the worker for one task queue with exactly the activities that queue serves.

The queues mirror the hardware they would run on in production: workflow workers are
light; CPU workers parse and chunk; GPU workers hold the embedding model.
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


@contextlib.asynccontextmanager
async def build_worker(
    queue: Queue, client: Client, settings: Settings, database_url: str
) -> AsyncIterator[Worker]:
    """Yield a configured (not yet running) worker; close its resources afterwards."""
    blobs = BlobStore.from_settings(settings)
    pool = None
    if queue is Queue.WORKFLOW:
        from activities.bookkeeping import Bookkeeping
        from workflows.document import DocumentWorkflow
        from workflows.indexing import IndexingWorkflow

        pool = await create_pool(database_url, max_size=5)
        worker = Worker(
            client,
            task_queue=settings.workflow_task_queue,
            workflows=[IndexingWorkflow, DocumentWorkflow],
            activities=Bookkeeping(pool).all(),
        )
    elif queue is Queue.CPU:
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
        worker = Worker(
            client,
            task_queue=settings.cpu_task_queue,
            activities=DocumentSteps(
                blobs, pool, parser, chunker, checkpoint_pages=settings.parse_checkpoint_pages
            ).all(),
            max_concurrent_activities=settings.cpu_worker_concurrency,
        )
    else:
        from activities.embedding import EmbeddingSteps
        from docindex.pipeline.embedding import get_local_embedder

        embedder = get_local_embedder(settings.embed_model, settings.embed_device)
        worker = Worker(
            client,
            task_queue=settings.gpu_task_queue,
            activities=EmbeddingSteps(blobs, embedder).all(),
            max_concurrent_activities=settings.gpu_worker_concurrency,
        )
    log.info("worker ready on %s queue", queue.value)
    try:
        yield worker
    finally:
        if pool is not None:
            await pool.close()
