"""Workers that parse and embed lower the niceness of every thread they have, and what they
start after inherits it (workers/priority.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="per-thread niceness is Linux's"
)

# A thread started before the call (as a library's pool would be at import), the call, then
# a thread and a process started after it; prints their ids, then waits to be inspected.
PROGRAM = textwrap.dedent(
    """
    import subprocess, sys, threading
    from workers.priority import lower_priority

    hold = threading.Event()
    early = threading.Thread(target=hold.wait, daemon=True)
    early.start()
    lower_priority({nice})
    late = threading.Thread(target=hold.wait, daemon=True)
    late.start()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(early.native_id, late.native_id, child.pid, flush=True)
    sys.stdin.readline()
    child.kill()
    """
)


def _lowered(nice: int) -> tuple[subprocess.Popen[str], list[int]]:
    """Run PROGRAM; the niceness of every thread of it and of its child."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PROGRAM.format(nice=nice)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    early, late, child = (int(x) for x in proc.stdout.readline().split())
    threads = {int(t) for t in os.listdir(f"/proc/{proc.pid}/task")}
    assert {early, late} <= threads
    seen = [os.getpriority(os.PRIO_PROCESS, tid) for tid in [*threads, child]]
    return proc, seen


def test_every_thread_is_lowered_and_what_starts_after_inherits_it() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    proc, seen = _lowered(10)
    try:
        assert seen == [min(19, base + 10)] * len(seen)
    finally:
        proc.communicate("\n", timeout=30)
