"""A run's events: what the live stream (GET /v1/runs/{id}/events) and webhooks carry.

Written where the state already changes (docs/decisions.md, "Live progress and webhooks"):
a document's step (DocumentWorkflow, a local activity in the workflow task that schedules
the step; the store step writes its own start), its completion (the store step), its failure
or cancellation (the outcome's bookkeeping), and the run's end with its totals (the run's
status bookkeeping).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from docindex.models import DocStatus, RunState, Step

EventKind = Literal["document", "run"]
# What a webhook may subscribe to.
WebhookEvent = Literal["document.completed", "document.failed", "run.completed"]
WEBHOOK_EVENTS: tuple[str, ...] = ("document.completed", "document.failed", "run.completed")


class DocumentEvent(BaseModel):
    """A document's state or step changed."""

    document_id: str
    status: DocStatus
    step: Step | None = None
    pages_parsed: int | None = None
    error_type: str | None = None

    @property
    def webhook_event(self) -> WebhookEvent | None:
        """The webhook event this is, if any: only a document's end is one. A cancelled
        document is neither completed nor failed."""
        if self.status is DocStatus.COMPLETED:
            return "document.completed"
        if self.status in (DocStatus.FAILED, DocStatus.QUARANTINED):
            return "document.failed"
        return None


class RunTotals(BaseModel):
    """The run's end: the last event of its stream."""

    run_id: str
    status: RunState
    document_count: int
    completed: int
    failed: int
    cancelled: int
    quarantined: int


class RunEvent(BaseModel):
    """One event of a run's log, as stored."""

    run_id: str
    seq: int
    kind: EventKind
    data: dict[str, object]
