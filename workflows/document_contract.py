"""What ``IndexingWorkflow`` and the API exchange with ``DocumentWorkflow``."""

from __future__ import annotations

from pydantic import BaseModel

from docindex.models import DocStatus, DocumentTask, Step
from docindex.spec import PipelineSpec

from .options import RunOptions


class DocumentInput(BaseModel):
    task: DocumentTask
    spec: PipelineSpec
    options: RunOptions


class DocumentProgress(BaseModel):
    """What a child reports to its parent by signal, and what its status query returns."""

    document_id: str
    filename: str
    status: DocStatus
    step: Step | None = None
    pages: int | None = None
    pages_parsed: int | None = None
    chunk_count: int | None = None
    error_type: str | None = None
    error: str | None = None
