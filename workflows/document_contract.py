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
    # The index generation its chunks go to (None: the tenant's active one when stored).
    generation_id: str | None = None
    # Derived into a generation being built from the already indexed document: only that
    # generation is written; the document's own status and row stay as they are.
    derive: bool = False


class DocumentProgress(BaseModel):
    """What a child reports to its parent by signal, and what its status query returns."""

    document_id: str
    filename: str
    status: DocStatus
    step: Step | None = None
    pages: int | None = None
    pages_parsed: int | None = None
    # PDF pages to OCR, and those done, while the document is in the OCR step.
    ocr_pages: int | None = None
    ocr_pages_done: int | None = None
    chunk_count: int | None = None
    # Pages that gave no text to the index (see the document's quality report).
    warning: str | None = None
    error_type: str | None = None
    error: str | None = None
    # The batch workflow indexing it, when it runs in one (workflows/batch.py); None: its
    # own DocumentWorkflow, or none yet.
    workflow_id: str | None = None
