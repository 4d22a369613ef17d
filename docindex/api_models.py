"""The public API's request and response bodies: one definition, that the API serves
(``api/schemas.py`` re-exports them) and ``docindex.client`` parses answers into. Here, in
the core, because the client may not import ``api`` (the layers: ``docindex`` is the bottom).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from docindex.models import DocStatus, GenerationStatus, RunState, Step

# The answer to a retry or reindex; defined with the workflow vocabulary it also is.
from docindex.models import RetryAccepted as RetryAccepted
from docindex.spec import ChunkerSpec, EmbedderSpec, EnricherSpec


class AcceptedDocument(BaseModel):
    document_id: str
    run_id: str = Field(description="The run that indexes (or indexed) this document")
    filename: str
    sha256: str
    size_bytes: int
    duplicate: bool = Field(
        default=False,
        description="These bytes were already uploaded by this tenant and are indexed or "
        "being indexed: this is that document, and it is not indexed twice",
    )


class UploadAccepted(BaseModel):
    run_id: str | None = Field(
        description="The new run; null when every file was a duplicate (nothing to index)"
    )
    workflow_id: str | None
    documents: list[AcceptedDocument]
    status_url: str | None
    trace_id: str | None = Field(default=None, description="OpenTelemetry trace of this upload")
    replayed: bool = Field(
        default=False,
        description="True when this answers a repeated Idempotency-Key: nothing new was started",
    )


class DocumentStatus(BaseModel):
    # Read from a repository row's attributes (``model_validate(row)``).
    model_config = ConfigDict(from_attributes=True)

    @model_validator(mode="before")
    @classmethod
    def _quality_from_metadata(cls, data: Any) -> Any:
        """A stored document's quality report and warning live in its metadata."""
        metadata = getattr(data, "metadata", None)
        if isinstance(metadata, dict) and isinstance(metadata.get("quality"), dict):
            quality = metadata["quality"]
            fields = {name: getattr(data, name, None) for name in cls.model_fields}
            fields |= {"quality": quality, "warning": quality.get("warning")}
            return {k: v for k, v in fields.items() if v is not None}
        return data

    document_id: str
    filename: str
    status: DocStatus
    step: Step | None = None
    pages: int | None = None
    pages_parsed: int | None = Field(
        default=None, description="While a big PDF is parsed in page ranges: pages done"
    )
    ocr_pages: int | None = Field(
        default=None, description="PDF pages with no readable text layer, to OCR"
    )
    ocr_pages_done: int | None = Field(default=None, description="While OCR runs: pages done")
    chunk_count: int | None = None
    quality: dict[str, Any] | None = Field(
        default=None,
        description="PDFs: pages in total, with text, OCRed, unreadable, empty (and which), "
        "tables found",
    )
    warning: str | None = Field(
        default=None, description="Pages that gave no text to the index, when there are any"
    )
    error_type: str | None = None
    error: str | None = None
    tokens: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Tokens used per provider/model, with their cost"
    )
    cost_usd: float = 0.0


class RunStatus(BaseModel):
    run_id: str
    workflow_id: str
    status: RunState
    source: str = Field(description="'workflow' when read live by query, else 'database'")
    trace_id: str | None = Field(
        default=None, description="OpenTelemetry trace: the upload, its workflows, every step"
    )
    document_count: int
    completed: int
    failed: int
    cancelled: int
    quarantined: int = Field(
        default=0, description="Documents stopped because their steps kept killing workers"
    )
    running: int
    created_at: datetime
    finished_at: datetime | None = None
    tokens: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Sum over the run's stored documents"
    )
    cost_usd: float = 0.0
    pipeline: dict[str, Any] | None = Field(
        default=None,
        description="What the run's documents become: the spec's digest, then its parser, "
        "chunker, embedder and enricher; null for runs recorded before runs kept their spec",
    )
    documents: list[DocumentStatus]


class DocumentDetail(DocumentStatus):
    run_id: str
    sha256: str
    size_bytes: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    last_error_type: str | None = Field(
        default=None,
        description="Why the latest reindex of this document did not take: it stayed "
        "completed and search kept serving what it had",
    )
    last_error: str | None = None
    last_error_at: datetime | None = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(default=5, ge=1, le=100)
    mode: Literal["hybrid", "vector", "keyword"] = Field(
        default="hybrid",
        description="hybrid: full-text and vector search fused by reciprocal rank; vector: "
        "nearest embeddings; keyword: full-text search only (needs no embedding provider). "
        "Quoted phrases, OR and -excluded words follow web-search syntax",
    )
    document_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Only chunks of these documents",
    )
    filename: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="Only documents whose file name matches this glob (*, ?, [abc], [!abc]); "
        "case-insensitive",
    )
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="Only documents whose metadata contains this JSON "
        '(e.g. {"kind": "pdf"}; as Postgres\' jsonb @>)',
    )
    generation_id: uuid.UUID | None = Field(
        default=None,
        description="Search this index generation instead of the active one (to compare a "
        "generation being built or retired with the one serving)",
    )

    @field_validator("filename")
    @classmethod
    def _glob(cls, value: str | None) -> str | None:
        if value is not None:
            # Imported here: the repository (asyncpg and all) stays out of the client's import.
            from docindex.repository.chunks import filename_regex

            filename_regex(value)  # ValueError → 422 naming the mistake
        return value

    @field_validator("metadata")
    @classmethod
    def _small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > 4096:
            raise ValueError("at most 4096 bytes of JSON")
        return value


class SearchHit(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    document_id: str
    chunk_id: str
    score: float = Field(
        description="The mode's: cosine similarity (vector), keyword rank (keyword: 2 and "
        "more with the query's words in order, 1 and more with all its terms), or the sum of "
        "1/(60 + rank) over the lists the chunk is in (hybrid)"
    )
    text: str
    context: str | None = Field(
        default=None, description="What enrichment said situates this chunk in its document"
    )
    pages: list[int]
    headings: list[str]
    filename: str
    highlight: str = Field(
        description="A snippet of the text with the query's words between <mark> and </mark> "
        "(not HTML-escaped); the start of the text when none of them is in it"
    )
    similarity: float | None = Field(
        default=None, description="Cosine similarity to the query; null in keyword mode"
    )
    vector_rank: int | None = Field(
        default=None, description="Place (from 1) among the vector search's candidates"
    )
    keyword_rank: int | None = Field(
        default=None, description="Place (from 1) among the full-text search's candidates"
    )


class SearchResponse(BaseModel):
    model: str | None = Field(
        description="The embedding model the query was embedded with; null in keyword mode"
    )
    mode: str
    generation_id: str | None = Field(
        default=None, description="The index generation searched (null: nothing indexed yet)"
    )
    results: list[SearchHit]


class Problem(BaseModel):
    """Every error answer: what went wrong, said for people."""

    detail: Any


class GenerationRequest(BaseModel):
    """A new index generation: the parts to change; omitted parts are the active
    generation's. The parse is shared: a generation never re-parses a document."""

    model_config = ConfigDict(extra="forbid")

    chunker: ChunkerSpec | None = None
    embedder: EmbedderSpec | None = None
    enricher: EnricherSpec | None = None


class GenerationAccepted(BaseModel):
    generation_id: str
    status_url: str
    workflow_id: str


class GenerationDetail(BaseModel):
    generation_id: str
    status: GenerationStatus
    documents_total: int = Field(description="The tenant's indexed documents when it started")
    documents_done: int
    documents_failed: int
    chunk_count: int
    tokens: dict[str, dict[str, Any]] = Field(default_factory=dict)
    cost_usd: float = 0.0
    pipeline: dict[str, Any] = Field(description="Its chunker, embedder and enricher")
    workflow_id: str | None = None
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    promoted_at: datetime | None = None


class GenerationList(BaseModel):
    generations: list[GenerationDetail]


class PromotionGate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eval_set: str = Field(min_length=1, max_length=200)
    min_recall_at_5: float = Field(default=0.0, ge=0.0, le=1.0)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    require: PromotionGate | None = Field(
        default=None,
        description="Run the eval set on both generations first; refuse (409) when the new "
        "one scores below min_recall_at_5 or below the active one",
    )


class EvalScores(BaseModel):
    eval_set: str
    queries: int
    candidate_recall_at_5: float
    active_recall_at_5: float | None
    min_recall_at_5: float


class PromoteResult(BaseModel):
    generation_id: str
    status: GenerationStatus
    previous_generation_id: str | None
    evaluation: EvalScores | None = None


class EvalQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000)
    document_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=100, description="Documents a good answer comes from"
    )

    @field_validator("query")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:  # Postgres text and jsonb cannot hold it
            raise ValueError("must not contain NUL characters")
        return value


class EvalSetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    queries: list[EvalQuery] = Field(min_length=1, max_length=1000)


class EvalSetSummary(BaseModel):
    name: str
    queries: int
    updated_at: datetime


class RetryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # It reaches the run's workflow history: held small.
    error_types: list[Annotated[str, Field(min_length=1, max_length=100)]] | None = Field(
        default=None,
        max_length=20,
        description="Only documents that failed with these error types",
    )


class BulkRetry(BaseModel):
    error_type: str = Field(
        min_length=1, max_length=100, description="e.g. RateLimited, ProviderUnavailable"
    )
    since: datetime | None = Field(default=None, description="Only failures after this time")


class BulkRetryAccepted(BaseModel):
    runs: int
    documents: int


# --- lists: newest first, a page at a time ------------------------------------------------

PAGE_LIMIT_DEFAULT = 50
PAGE_LIMIT_MAX = 500


class DocumentItem(BaseModel):
    """A document as recorded in Postgres (``GET /v1/documents/{id}`` adds live progress)."""

    model_config = ConfigDict(from_attributes=True)

    document_id: str
    run_id: str
    filename: str
    status: DocStatus
    sha256: str
    size_bytes: int
    pages: int | None = None
    chunk_count: int | None = None
    error_type: str | None = None
    error: str | None = None
    cost_usd: float = 0.0
    created_at: datetime
    updated_at: datetime


class DocumentPage(BaseModel):
    documents: list[DocumentItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )


class RunItem(BaseModel):
    """A run as recorded in Postgres: its counts are written when it ends
    (``GET /v1/runs/{id}`` has live progress)."""

    model_config = ConfigDict(from_attributes=True)

    run_id: str
    workflow_id: str
    status: RunState
    document_count: int
    completed: int
    failed: int
    cancelled: int
    trace_id: str | None = None
    generation_id: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


class RunPage(BaseModel):
    runs: list[RunItem]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last page"
    )
