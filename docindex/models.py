"""The domain's vocabulary: what state a document or run is in, and a document's place in a
run. Light on purpose: workflows, activities, the repository and the API all speak it.

What crosses a Temporal boundary lives next to its owner: step inputs and results in
``docindex.steps.models``, workflow inputs in ``workflows/*_contract.py``, bookkeeping
inputs in ``activities/bookkeeping.py``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel


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


class GenerationStatus(StrEnum):
    """Where an index generation is (docindex.repository.generations)."""

    BUILDING = "building"
    READY = "ready"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Step(StrEnum):
    PARSE = "parse"
    # PDF pages with no readable text layer, read by OCR (after the parse, before chunking).
    OCR = "ocr"
    METADATA = "metadata"
    # Chunk before enrich: each chunk's situating context needs the chunks.
    CHUNK = "chunk"
    ENRICH = "enrich"
    EMBED = "embed"
    STORE = "store"


class DocumentTask(BaseModel):
    """One document of a run, as the run hands it to its document workflow."""

    run_id: str
    document_id: str
    # Whose document: every blob its steps read or write is keyed under its tenant.
    tenant_id: str
    seq: int
    filename: str
    sha256: str
    size_bytes: int
    blob_key: str
    # The password itself never enters workflow history; it waits in the blob store.
    password_key: str | None = None


class DocumentOutcome(BaseModel):
    document_id: str
    status: DocStatus
    error_type: str | None = None
    error: str | None = None


class RetryRequest(BaseModel):
    """Which documents of a run to index again."""

    document_ids: list[str] | None = None  # None: every failed or cancelled document
    error_types: list[str] | None = None  # only documents that failed with these
    include_completed: bool = False  # re-index completed documents too (reindex)


class RetryAccepted(BaseModel):
    """What a retry (or reindex) of a run started: the run's update result, and the API's
    answer."""

    run_id: str
    document_ids: list[str]
