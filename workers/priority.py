"""Parsing and embedding yield the cores to what someone waits on (docs/decisions.md,
"Parsing and embedding run at a lower priority").

Linux keeps a niceness per thread, and a new thread or process takes its creator's.
``os.nice`` changes only the calling thread, so a thread a library started while the worker
was importing (a BLAS pool) kept the old priority: every thread the process has is lowered,
and those started afterwards, the parse processes included, inherit it from whichever
thread starts them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def lower_priority(nice: int) -> None:
    """Raise the niceness of every thread of this process by ``nice`` (up to 19)."""
    if not nice:
        return
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():  # not Linux: niceness is the process's own
        os.nice(nice)
        return
    for tid in (int(t.name) for t in tasks.iterdir()):
        # A thread that ended since it was listed has nothing left to lower.
        with contextlib.suppress(ProcessLookupError):
            now = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, now + nice))
