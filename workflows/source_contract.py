"""What the API and the schedule exchange with ``SourceWorkflow``."""

from __future__ import annotations

from pydantic import BaseModel, Field

SYNC_SIGNAL = "sync"
SYNC_KEYS_SIGNAL = "sync_keys"
STOP_SIGNAL = "stop"
# Keys one event post may name (and one check step looks at).
MAX_EVENT_KEYS = 1000


def source_workflow_id(source_id: str) -> str:
    return f"source/{source_id}"


def source_schedule_id(source_id: str) -> str:
    return f"source-sync/{source_id}"


class SourceInput(BaseModel):
    source_id: str
    tenant_id: str
    # How long an import waits when the tenant is at its quota of runs or documents in
    # flight (the workflow must not read settings; this travels with it).
    quota_wait_s: float = Field(default=30.0, gt=0)
    # Carried across continue-as-new: cursors and counters only. What each listing saw is
    # in Postgres (source_objects), never in history.
    sync_requested: bool = True
    keys: list[str] = Field(default_factory=list)
    sync_no: int | None = None  # the sync under way
    after: str | None = None  # its listing's cursor
    listing: bool = False
    importing: bool = False
    syncs: int = 0
    recorded: int = 0
    stop: bool = False
    purge: bool = False


class StopRequest(BaseModel):
    purge: bool = False


class SourceTick(BaseModel):
    source_id: str


class SourceProgress(BaseModel):
    source_id: str
    phase: str  # idle | listing | importing | waiting | purging
    sync_no: int | None
    syncs: int
    recorded: int
    keys_waiting: int
