"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from docindex.models import DocStatus, RunState, Step


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


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    top_k: int = Field(default=5, ge=1, le=100)


class SearchHit(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    document_id: str
    chunk_id: str
    score: float
    text: str
    context: str | None = Field(
        default=None, description="What enrichment said situates this chunk in its document"
    )
    pages: list[int]
    headings: list[str]
    filename: str


class SearchResponse(BaseModel):
    model: str
    results: list[SearchHit]


class Problem(BaseModel):
    """Every error answer: what went wrong, said for people."""

    detail: Any


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses."""
    reasons = {
        401: "No API key, or an unknown or revoked one",
        404: "No such run or document for this tenant",
        409: "Not possible in the current state",
        429: "Too many requests for this key; see Retry-After",
        502: "The embedding provider refused the request",
        503: "A backing service (Temporal, Postgres, a provider) is unavailable; retry",
    }
    return {code: {"model": Problem, "description": reasons[code]} for code in codes}
