"""What ``IndexingWorkflow`` exchanges with ``DocumentBatchWorkflow``."""

from __future__ import annotations

from pydantic import BaseModel, Field

from docindex.models import DocumentTask
from docindex.spec import PipelineSpec
from docindex.steps.models import HandedBack

from .options import RunOptions


class BatchInput(BaseModel):
    tasks: list[DocumentTask]
    spec: PipelineSpec
    options: RunOptions
    generation_id: str | None = None
    # Documents already indexed, derived into ``generation_id`` from the parses they have
    # (a generation's build): no run events, and what does not complete is recorded with
    # the generation, never on the document.
    derive: bool = False
    # Each document through its own steps, none waiting for another (documents of any
    # size in a run of many); else the batch's documents take each step together.
    side_by_side: bool = False
    # Side by side: documents indexed at once (the others wait their turn in the batch).
    parallel: int = 2


class BatchOutcome(BaseModel):
    """Each document of the batch, once: completed, cancelled, or handed back to the run,
    which gives it a DocumentWorkflow of its own."""

    completed: list[str] = Field(default_factory=list)
    cancelled: list[str] = Field(default_factory=list)
    handed_back: dict[str, HandedBack] = Field(default_factory=dict)


class HandedBackNotice(BaseModel):
    """Documents a batch handed back, sent to its parent (a run, or a generation's build)
    as it happens: each gets its DocumentWorkflow while the batch goes on with the others,
    not when the batch ends. The batch's outcome names them too; the parent takes each
    once."""

    batch_workflow_id: str
    documents: dict[str, HandedBack]
