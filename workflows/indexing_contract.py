"""What the API and operators exchange with ``IndexingWorkflow``: its input, its status
query, its retry update and its result. Light: pydantic and the domain's vocabulary."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

# RetryAccepted is the API's answer too; it lives with the vocabulary the client shares.
from docindex.models import RetryAccepted as RetryAccepted
from docindex.models import RunState
from docindex.spec import PipelineSpec

from .document_contract import DocumentProgress
from .options import RunOptions


class RunInput(BaseModel):
    run_id: str
    document_count: int = 0
    spec: PipelineSpec = Field(default_factory=PipelineSpec)
    options: RunOptions = Field(default_factory=RunOptions)
    tenant_id: str = "default"
    # The index generation whose spec the run has (None: the tenant's active one).
    generation_id: str | None = None
    # Started by a retry after the run had closed: index only what the retry asks for.
    retry_only: bool = False
    # Carried across continue-as-new.
    next_seq: int = 0
    # Retried documents were queued (in Postgres) and not started before continuing-as-new.
    retry_pending: bool = False
    # When the run's unfinished documents are stopped (set by its first execution).
    deadline: datetime | None = None
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    quarantined: int = 0


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


class RunSummary(BaseModel):
    run_id: str
    status: RunState
    document_count: int
    completed: int
    failed: int
    cancelled: int
    quarantined: int = 0
