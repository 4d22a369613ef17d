"""What the API and operators exchange with ``GenerationWorkflow``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from docindex.spec import PipelineSpec

from .options import RunOptions


class GenerationInput(BaseModel):
    generation_id: str
    tenant_id: str
    # The generation's chunker, embedder and enricher; each document keeps the parser of
    # the run that indexed it, so its parse is reused, never redone.
    spec: PipelineSpec
    options: RunOptions = Field(default_factory=RunOptions)
    # Carried across continue-as-new: where the walk over the tenant's documents is.
    after_document_id: str | None = None
    documents_total: int = 0
    done: int = 0
    failed: int = 0


class GenerationProgress(BaseModel):
    generation_id: str
    status: str
    documents_total: int
    documents_done: int
    documents_failed: int
    running: int


class GenerationSummary(BaseModel):
    generation_id: str
    status: str
    documents_total: int
    documents_done: int
    documents_failed: int
