"""Parsing and embedding yield the cores to what someone waits on (docs/decisions.md,
"Parsing and embedding run at a lower priority").

Linux keeps a niceness and a scheduling policy per thread, and a new thread or process
takes its creator's. ``os.nice`` changes only the calling thread, so a thread a library
started while the worker was importing (a BLAS pool) would keep the old priority: every
thread the process has is lowered, and those started afterwards, the parse processes
included, inherit it from whichever thread starts them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def yield_cores(nice: int, idle_policy: bool) -> None:
    """Raise this process's niceness by ``nice`` (up to 19) and, where the platform has it,
    put it under ``SCHED_IDLE``: a core only when nothing at normal priority wants it, and
    a normal task waking on that core takes it at once."""
    threads = _threads()
    if threads is None:  # not Linux: niceness is the process's own
        if nice:
            os.nice(nice)
        return
    idle = getattr(os, "SCHED_IDLE", None) if idle_policy else None
    for tid in threads:
        # A thread that ended since it was listed has nothing left to lower.
        with contextlib.suppress(ProcessLookupError):
            if nice:
                now = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice))
            if idle is not None:
                os.sched_setscheduler(tid, idle, os.sched_param(0))


def _threads() -> list[int] | None:
    tasks = Path("/proc/self/task")
    if not hasattr(os, "sched_setscheduler") or not tasks.is_dir():
        return None
    return [int(t.name) for t in tasks.iterdir()]
