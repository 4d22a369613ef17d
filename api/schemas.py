"""Request and response bodies of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from docindex.models import DocStatus, RunState, Step


class AcceptedDocument(BaseModel):
    document_id: str
    filename: str
    sha256: str
    size_bytes: int


class UploadAccepted(BaseModel):
    run_id: str
    workflow_id: str
    documents: list[AcceptedDocument]
    status_url: str
    trace_id: str | None = Field(default=None, description="OpenTelemetry trace of this upload")


class DocumentStatus(BaseModel):
    document_id: str
    filename: str
    status: DocStatus
    step: Step | None = None
    pages: int | None = None
    pages_parsed: int | None = Field(
        default=None, description="While a big PDF is parsed in page ranges: pages done"
    )
    chunk_count: int | None = None
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
    running: int
    created_at: datetime
    finished_at: datetime | None = None
    tokens: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Sum over the run's stored documents"
    )
    cost_usd: float = 0.0
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
