"""Reading Temporal history: where a document's time went, and a run's executions."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

# Activity → the pipeline step it belongs to (as the local path times them).
STEP_OF = {
    "inspect_document": "parse",
    # Inspect, parse, metadata and chunk in one activity: its time counts as parse.
    "prepare_document": "parse",
    "prepare_documents": "parse",
    "parse_document": "parse",
    "parse_page_range": "parse",
    "merge_parsed_parts": "parse",
    "extract_metadata": "metadata",
    "chunk_document": "chunk",
    "enrich_document": "enrich",
    "contextualize_chunks": "enrich",
    "embed_chunks": "embed",
    "embed_documents": "embed",
    "store_document": "store",
    "store_documents": "store",
}


@dataclass
class Breakdown:
    """Seconds summed over documents: per step, time in activities (``run``) and waiting
    in task queues (``queue``); ``wall`` is each workflow's first to last event."""

    run: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    queue: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    activities: int = 0
    wall: float = 0.0
    events: int = 0

    def add(self, other: Breakdown) -> None:
        for k, v in other.run.items():
            self.run[k] += v
        for k, v in other.queue.items():
            self.queue[k] += v
        self.activities += other.activities
        self.wall += other.wall
        self.events += other.events


async def document_breakdown(client: Client, workflow_id: str) -> Breakdown:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    events = list(history.events)
    out = Breakdown(events=len(events))
    if not events:
        return out
    out.wall = (
        events[-1].event_time.ToDatetime() - events[0].event_time.ToDatetime()
    ).total_seconds()
    scheduled: dict[int, tuple[str, float]] = {}
    started: dict[int, float] = {}
    task_started = 0.0
    for e in events:
        t = e.event_time.ToDatetime().timestamp()
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            task_started = t
        elif e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            # A local activity (the store step) runs inside a workflow task and leaves only
            # a marker, recorded when that task completes: count the task's time as its own.
            name = _local_activity_type(e)
            if name is not None:
                out.run[STEP_OF.get(name, "bookkeeping")] += t - task_started
                out.activities += 1
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            name = e.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[e.event_id] = (name, t)
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            sid = e.activity_task_started_event_attributes.scheduled_event_id
            started[sid] = t
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            name, t_sched = scheduled[sid]
            step = STEP_OF.get(name, "bookkeeping")
            t_start = started.get(sid, t_sched)
            out.queue[step] += t_start - t_sched
            out.run[step] += t - t_start
            out.activities += 1
    return out


def _local_activity_type(event: HistoryEvent) -> str | None:
    attrs = event.marker_recorded_event_attributes
    if attrs.marker_name != "core_local_activity" or "data" not in attrs.details:
        return None
    (payload,) = attrs.details["data"].payloads
    return str(json.loads(payload.data).get("activity_type", "")) or None


@dataclass
class Execution:
    run_id: str
    events: int
    size_bytes: int
    closed_by: str
    workflow_task_failures: int


async def executions(client: Client, workflow_id: str) -> list[Execution]:
    """Every execution of a workflow id, first to last, following continue-as-new back from
    the latest execution."""
    found: list[Execution] = []
    run_id: str | None = None
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        events = list(history.events)
        first, last = events[0], events[-1]
        found.append(
            Execution(
                run_id=history.run_id,
                events=len(events),
                size_bytes=sum(e.ByteSize() for e in events),
                closed_by=EventType.Name(last.event_type).removeprefix("EVENT_TYPE_"),
                workflow_task_failures=sum(
                    e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in events
                ),
            )
        )
        previous = first.workflow_execution_started_event_attributes.continued_execution_run_id
        if not previous:
            break
        run_id = previous
    return list(reversed(found))


async def parse_span(client: Client, workflow_id: str) -> float:
    """Seconds from the first parse activity scheduled to the last one completed (page
    ranges and their merge included)."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    names: dict[int, str] = {}
    first = last = None
    for e in history.events:
        t = e.event_time.ToDatetime().timestamp()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            if STEP_OF.get(names[e.event_id]) == "parse" and first is None:
                first = t
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            sid = e.activity_task_completed_event_attributes.scheduled_event_id
            if STEP_OF.get(names.get(sid, "")) == "parse":
                last = t
    if first is None or last is None:
        raise RuntimeError(f"{workflow_id} has no completed parse activity")
    return last - first


@dataclass
class Cost:
    """What one workflow execution cost the server, read from its history."""

    events: float = 0
    workflow_tasks: float = 0
    upserts: float = 0
    markers: float = 0
    activities: float = 0
    signals: float = 0

    def add(self, other: Cost) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def execution_cost(client: Client, workflow_id: str) -> Cost:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    cost = Cost()
    for e in history.events:
        cost.events += 1
        t = e.event_type
        cost.workflow_tasks += t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
        cost.upserts += t == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        cost.markers += t == EventType.EVENT_TYPE_MARKER_RECORDED
        cost.activities += t == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        cost.signals += t == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    return cost


def _unix(event: HistoryEvent) -> float:
    return event.event_time.seconds + event.event_time.nanos / 1e9


async def critical_path(
    client: Client, run_workflow: str, document_workflow: str
) -> list[tuple[str, float]]:
    """A one-document run's path to its document's end, as (segment, unix seconds at its
    end): the run's events up to the child's start, then every event of the child. A
    segment is named for what ends it: a task's ``queue`` ends when a worker takes it
    (scheduled → started), its ``run`` when the worker reports (started → completed);
    events written together by one task completion are folded into it."""
    run = list((await client.get_workflow_handle(run_workflow).fetch_history()).events)
    doc = list((await client.get_workflow_handle(document_workflow).fetch_history()).events)
    path: list[tuple[str, float]] = []
    names: dict[int, str] = {}
    counters: dict[str, int] = defaultdict(int)

    def walk(prefix: str, events: list[HistoryEvent], stop: EventType.ValueType | None) -> None:
        for e in events:
            t, kind = _unix(e), e.event_type
            if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                path.append((f"{prefix} started", t))
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                counters[prefix] += 1
                path.append((f"{prefix} WFT{counters[prefix]} queue", t))
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                path.append((f"{prefix} WFT{counters[prefix]} run", t))
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                sid = e.activity_task_started_event_attributes.scheduled_event_id
                path.append((f"{names[sid]} queue", t))
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                sid = e.activity_task_completed_event_attributes.scheduled_event_id
                path.append((f"{names[sid]} run", t))
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and path:
                # Scheduled when the previous step ended: a gap here is the server's.
                path.append((f"{prefix} WFT{counters[prefix] + 1} scheduled", t))
            elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                path.append((f"{prefix} closed", t))
            if kind == stop:
                return

    walk("run", run, EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED)
    walk("doc", doc, None)
    return path
