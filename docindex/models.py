"""Small models that cross Temporal boundaries (workflow inputs, activity inputs/results).

Large data never travels in these: parsed documents, chunks and vectors stay in the blob
store and only their keys pass through workflow history.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from docindex.usage import Usage


class DocStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Its steps kept killing (or hanging) the workers that ran them: stopped after a bounded
    # number of attempts so it cannot crash-loop the fleet or hold up its run.
    QUARANTINED = "quarantined"

    @property
    def terminal(self) -> bool:
        return self in (
            DocStatus.COMPLETED,
            DocStatus.FAILED,
            DocStatus.CANCELLED,
            DocStatus.QUARANTINED,
        )


class RunState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Closed by Temporal without recording its end (terminated, timed out); never stored.
    TERMINATED = "terminated"


class Step(StrEnum):
    PARSE = "parse"
    METADATA = "metadata"
    # Chunk before enrich: each chunk's situating context needs the chunks.
    CHUNK = "chunk"
    ENRICH = "enrich"
    EMBED = "embed"
    STORE = "store"


class PipelineOptions(BaseModel):
    """Everything a run's workflows need to know that would otherwise come from the
    environment; workflows must not read the environment (it breaks replay)."""

    # Defaults match docindex.config, so an operator can start a retry from the temporal
    # CLI with only {"run_id": ..., "retry_only": true} as input.
    cpu_task_queue: str = "docindex-cpu"
    gpu_task_queue: str = "docindex-gpu"
    workflow_task_queue: str = "docindex-workflows"
    max_concurrent_documents: int = 8
    documents_per_execution: int = 200
    chunk_max_tokens: int = 256
    enricher: str = "none"
    contextual_chunks: bool = True
    context_chunks_per_activity: int = 8
    # Where embedding runs: the GPU queue for the local model, a rate-limited queue for
    # a hosted API; enrichment always runs on the rate-limited LLM queue.
    embed_task_queue: str = ""
    llm_task_queue: str = "docindex-llm"
    # Big PDFs: above split_pdf_pages, parse as ranges of range_pages on any CPU worker,
    # at most max_parallel_ranges at a time per document. None: the PDF pipeline's plan
    # (docindex/pagination.py), decided where the pipeline is known.
    split_pdf_pages: int | None = None
    range_pages: int | None = None
    max_parallel_ranges: int = 4
    # How soon a dead or hung worker is noticed on a long step.
    heartbeat_timeout_s: float = 30.0
    # Poison documents: parse attempts (per queue) before a document whose parse keeps
    # losing its worker is quarantined; with a large queue set, it gets as many more there.
    # Documents of large_document_bytes or more go to the large queue from the start.
    poison_max_attempts: int = 3
    large_task_queue: str = ""
    large_document_bytes: int = 0


class RunInput(BaseModel):
    run_id: str
    document_count: int = 0
    options: PipelineOptions = Field(default_factory=PipelineOptions)
    tenant_id: str = "default"
    # Started by a retry after the run had closed: index only what the retry asks for.
    retry_only: bool = False
    # Carried across continue-as-new.
    next_seq: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    quarantined: int = 0


class DocumentTask(BaseModel):
    run_id: str
    document_id: str
    seq: int
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str
    # The password itself never enters workflow history; it waits in the blob store.
    password_key: str | None = None


class DocumentInput(BaseModel):
    task: DocumentTask
    options: PipelineOptions


class DocumentProgress(BaseModel):
    """What a child reports to its parent by signal, and what queries return."""

    document_id: str
    filename: str
    status: DocStatus
    step: Step | None = None
    pages: int | None = None
    pages_parsed: int | None = None
    chunk_count: int | None = None
    error_type: str | None = None
    error: str | None = None


class RunProgress(BaseModel):
    run_id: str
    status: RunState
    document_count: int
    completed: int
    failed: int
    cancelled: int
    running: int
    documents: list[DocumentProgress] = Field(default_factory=list)
    quarantined: int = 0


class RetryRequest(BaseModel):
    """Which documents of a run to index again."""

    document_ids: list[str] | None = None  # None: every failed or cancelled document
    error_types: list[str] | None = None  # only documents that failed with these
    include_completed: bool = False  # re-index completed documents too (reindex)


class RetryAccepted(BaseModel):
    run_id: str
    document_ids: list[str]


class RequeueInput(BaseModel):
    run_id: str
    request: RetryRequest
    include_queued: bool = False


class RequeuedDocument(BaseModel):
    task: DocumentTask
    previous_status: DocStatus


class RunCounts(BaseModel):
    completed: int
    failed: int
    cancelled: int
    quarantined: int = 0


class FetchDocumentsInput(BaseModel):
    run_id: str
    after_seq: int
    limit: int


class InspectInput(BaseModel):
    document_id: str
    filename: str
    blob_key: str
    password_key: str | None = None


class InspectResult(BaseModel):
    kind: str
    pages: int | None
    pipeline: str


class ParseInput(BaseModel):
    document_id: str
    filename: str
    sha256: str
    blob_key: str
    password_key: str | None = None


class PageRangeInput(BaseModel):
    document_id: str
    filename: str
    sha256: str
    blob_key: str
    pipeline: str
    first_page: int
    last_page: int
    password_key: str | None = None


class PageRangeResult(BaseModel):
    part_keys: list[str]
    pages_parsed: int
    # Pages found already parsed by an earlier attempt (resumed, not parsed again).
    pages_reused: int


class MergeInput(BaseModel):
    document_id: str
    filename: str
    sha256: str
    pipeline: str
    part_keys: list[str]


class ParseResult(BaseModel):
    parsed_key: str
    kind: str
    pages: int | None  # None for formats without pages (DOCX, HTML, Markdown)
    pipeline: str
    # True when an earlier run's artifact was found and nothing was parsed again.
    reused: bool = False


class MetadataInput(BaseModel):
    document_id: str
    parsed_key: str
    kind: str
    pipeline: str


class DocumentMetadata(BaseModel):
    title: str | None = None
    kind: str
    pages: int | None
    pipeline: str
    headings: list[str] = Field(default_factory=list)
    tables: int = 0
    pictures: int = 0
    text_items: int = 0
    # The file was damaged and indexed anyway (DOCINDEX_RECOVER_DAMAGED_FILES): its text
    # may be incomplete or wrong. ``damage`` says what was damaged.
    recovered: bool = False
    damage: str | None = None


class DocumentSummary(BaseModel):
    """What the LLM says about a whole document."""

    title: str | None = None
    summary: str | None = None
    document_type: str | None = None
    keywords: list[str] = Field(default_factory=list)


class EnrichInput(BaseModel):
    document_id: str
    sha256: str
    parsed_key: str


class EnrichResult(BaseModel):
    status: str  # "skipped" | "enriched"
    enricher: str
    reason: str | None = None
    summary: DocumentSummary | None = None
    # The document text the chunk contexts are written against (cached prompt prefix).
    document_text_key: str | None = None
    usage: list[Usage] = Field(default_factory=list)
    reused: bool = False


class ContextInput(BaseModel):
    document_id: str
    sha256: str
    document_text_key: str
    chunks_key: str
    chunk_config: str
    first: int  # chunk ordinals, inclusive
    last: int


class ContextResult(BaseModel):
    contexts_key: str
    usage: list[Usage] = Field(default_factory=list)


class ChunkInput(BaseModel):
    document_id: str
    sha256: str
    parsed_key: str
    max_tokens: int


class ChunkResult(BaseModel):
    chunks_key: str
    chunk_count: int
    chunk_config: str
    reused: bool = False


class PrepareInput(BaseModel):
    """Inspect a document and, unless it is a PDF to split into page ranges, parse, describe
    and chunk it in the same activity: one dispatch instead of four for most documents."""

    document_id: str
    filename: str
    sha256: str
    blob_key: str
    password_key: str | None = None
    # PDFs with more pages are returned inspected only, to be parsed as page ranges.
    # None: the worker's pipeline decides.
    split_pdf_pages: int | None
    max_tokens: int


class PrepareResult(BaseModel):
    inspected: InspectResult
    # All None when the PDF is to be split: the workflow parses its page ranges.
    parsed: ParseResult | None = None
    metadata: DocumentMetadata | None = None
    chunked: ChunkResult | None = None


class EmbedInput(BaseModel):
    document_id: str
    sha256: str
    chunks_key: str
    chunk_config: str
    contexts_keys: list[str] = Field(default_factory=list)


class EmbedResult(BaseModel):
    vectors_key: str
    model: str
    dimension: int
    count: int
    usage: Usage | None = None
    reused: bool = False


class StoreInput(BaseModel):
    document_id: str
    chunks_key: str
    chunk_config: str
    vectors_key: str
    model: str
    dimension: int
    pages: int | None
    metadata: DocumentMetadata
    contexts_keys: list[str] = Field(default_factory=list)
    summary: DocumentSummary | None = None
    enrichment_status: str = "skipped"
    enrichment_reason: str | None = None
    usage: list[Usage] = Field(default_factory=list)


class StoreResult(BaseModel):
    chunk_count: int


class DocumentOutcome(BaseModel):
    document_id: str
    status: DocStatus
    error_type: str | None = None
    error: str | None = None


class RecordOutcomeInput(BaseModel):
    outcome: DocumentOutcome


class RunStatusUpdate(BaseModel):
    run_id: str
    status: RunState
    completed: int
    failed: int
    cancelled: int


class RunSummary(BaseModel):
    run_id: str
    status: RunState
    document_count: int
    completed: int
    failed: int
    cancelled: int
    quarantined: int = 0
