"""What each document costs the orchestration: beats only when a step runs long, and the
workflow modules' bytecode where the environment says not to write any."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.machinery
import importlib.util
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from activities.heartbeat import heartbeat_while
from workers.bytecode import compile_workflow_modules


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
