"""What each document costs the orchestration: a tiny document's history holds only what
someone can see or what durability needs, beats only when a step runs long, the workflow
modules' bytecode where the environment says not to write any, and no payload walks that
cannot change a payload."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.machinery
import importlib.util
import inspect
import sys
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import temporalio.worker._workflow
from temporalio import activity
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import PayloadCodec
from temporalio.converter._extstore import StorageOperationMetrics
from temporalio.testing import ActivityEnvironment

from activities.heartbeat import heartbeat_while
from docindex import search_attributes as sa
from docindex.ids import document_workflow_id
from workers import payloads
from workers.bytecode import compile_workflow_modules

from .helpers import wait_for_run


def _info(heartbeat_timeout_s: float | None, local: bool = False) -> activity.Info:
    timeout = timedelta(seconds=heartbeat_timeout_s) if heartbeat_timeout_s else None
    return dataclasses.replace(
        ActivityEnvironment().info, heartbeat_timeout=timeout, is_local=local
    )


async def _beats(work_s: float, heartbeat_timeout_s: float | None, local: bool = False) -> int:
    env = ActivityEnvironment()
    env.info = _info(heartbeat_timeout_s, local)
    beats: list[object] = []
    env.on_heartbeat = lambda *details: beats.append(details)

    async def step() -> str:
        return await heartbeat_while(asyncio.sleep(work_s, "done"))

    assert await env.run(step) == "done"
    return len(beats)


async def test_a_step_shorter_than_its_beat_interval_sends_no_heartbeat() -> None:
    # Every beat is a write to the workflow's state on the server.
    assert await _beats(0.05, heartbeat_timeout_s=3.0) == 0


async def test_a_long_step_beats_within_its_heartbeat_timeout() -> None:
    # Timeout 0.6 s: a beat every 0.2 s, the first at 0.2 s (the timeout counts from the
    # start, so a dead worker is still noticed in time).
    assert await _beats(0.75, heartbeat_timeout_s=0.6) >= 3


async def test_a_local_activity_never_beats() -> None:
    assert await _beats(0.75, heartbeat_timeout_s=0.6, local=True) == 0


def test_workflow_bytecode_is_written_even_with_dont_write_bytecode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workflows.document

    source = Path(workflows.document.__file__)
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.unlink(missing_ok=True)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    assert compile_workflow_modules()
    # Loadable as the import system loads it: the header matches the source's mtime.
    loader = importlib.machinery.SourceFileLoader("workflows.document", str(source))
    assert cached.exists() and loader.get_code("workflows.document") is not None
    header = cached.read_bytes()[8:12]
    assert int.from_bytes(header, "little") == int(source.stat().st_mtime) & 0xFFFFFFFF


async def test_a_tiny_documents_history_has_only_what_is_seen_or_needed(
    api: httpx.AsyncClient, client: Client
) -> None:
    note = ("note.md", f"# Heron\n\nIt waited by the weir. {uuid.uuid4()}\n".encode())
    accepted = (await api.post("/v1/documents", files=[("files", note)])).json()
    assert (await wait_for_run(api, accepted["run_id"]))["status"] == "completed"
    (doc,) = accepted["documents"]
    handle = client.get_workflow_handle(
        document_workflow_id(accepted["run_id"], doc["document_id"])
    )
    events = list((await handle.fetch_history()).events)

    def count(kind: int) -> int:
        return sum(e.event_type == kind for e in events)

    # Operators see it parsing from its start (set by the run), embedding, then its end: no
    # upsert for the first step and none for the store, which ends in the same task.
    started = events[0].workflow_execution_started_event_attributes
    assert "parsing" in str(started.search_attributes.indexed_fields[sa.DOC_STATUS.name])
    upserts = [
        str(e.upsert_workflow_search_attributes_event_attributes.search_attributes)
        for e in events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
    ]
    assert len(upserts) == 2 and "embedding" in upserts[0] and "completed" in upserts[1]
    # One workflow task per step's result (start, prepared, embedded), two activity tasks,
    # and a marker per local activity: two events (parse, embed) and the store, which
    # records its own start and end in the run's events.
    assert count(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) == 3
    assert count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 2
    assert count(EventType.EVENT_TYPE_MARKER_RECORDED) == 3
    assert len(events) == 22, [EventType.Name(e.event_type) for e in events]


async def test_payload_walks_are_skipped_only_when_nothing_would_change_a_payload() -> None:
    walked: list[object] = []

    async def walk(message: object, data_converter: object, *_: object) -> object:
        walked.append(message)
        return StorageOperationMetrics()

    maybe_walk = payloads._skip_without_effect(walk)
    await maybe_walk("activation", pydantic_data_converter, False, 1)
    assert walked == []
    with_codec = dataclasses.replace(pydantic_data_converter, payload_codec=_Codec())
    await maybe_walk("activation", with_codec, False, 1)
    assert walked == ["activation"]
    # The workflow worker still looks both functions up on the module at each activation
    # (a temporalio upgrade that changes this fails here, not silently).
    source = inspect.getsource(temporalio.worker._workflow)
    assert "temporalio.bridge.worker.decode_activation(" in source
    assert "temporalio.bridge.worker.encode_completion(" in source


class _Codec(PayloadCodec):
    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)
