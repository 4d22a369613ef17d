"""One way to connect to Temporal, with the pydantic data converter everywhere."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from docindex.config import Settings
from docindex.models import PipelineOptions
from docindex.telemetry import temporal_plugins


def temporal_address(settings: Settings) -> str:
    return settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        temporal_address(settings),
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        plugins=temporal_plugins(),
        runtime=runtime,
    )


def pipeline_options(settings: Settings) -> PipelineOptions:
    return PipelineOptions(
        cpu_task_queue=settings.cpu_task_queue,
        gpu_task_queue=settings.gpu_task_queue,
        workflow_task_queue=settings.workflow_task_queue,
        max_concurrent_documents=settings.max_concurrent_documents,
        documents_per_execution=settings.documents_per_run_execution,
        chunk_max_tokens=settings.chunk_max_tokens,
        enricher=settings.enricher,
        contextual_chunks=settings.contextual_chunks,
        context_chunks_per_activity=settings.context_chunks_per_activity,
        embed_task_queue=(
            settings.embed_api_task_queue
            if settings.embedder == "voyage"
            else settings.gpu_task_queue
        ),
        llm_task_queue=settings.llm_task_queue,
        split_pdf_pages=settings.split_pdf_pages,
        range_pages=settings.range_pages,
        max_parallel_ranges=settings.max_parallel_ranges,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        poison_max_attempts=settings.poison_max_attempts,
        large_task_queue=settings.large_task_queue,
        large_document_bytes=settings.large_document_bytes,
    )
