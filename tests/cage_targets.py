"""Functions the cage tests run in a child process (a child imports them by name)."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from docindex.errors import EmptyDocument


def pages(n: int, report: Callable[[dict[str, Any]], None]) -> int:
    for done in range(1, n + 1):
        report({"pages_done": done, "pages_total": n})
    return os.getpid()


def empty(report: Callable[[dict[str, Any]], None]) -> None:
    raise EmptyDocument("nothing here")


def sleep(seconds: float, report: Callable[[dict[str, Any]], None]) -> None:
    time.sleep(seconds)  # uses no CPU: to the parent, a stuck child


def spin(report: Callable[[dict[str, Any]], None]) -> None:
    while True:  # a tight loop in C: no Python signal handler ever runs
        ctypes.string_at(b"x" * 4096, 4096)


def hoard(report: Callable[[dict[str, Any]], None]) -> None:
    kept = []
    while True:
        kept.append(bytearray(64 << 20))


def burn(cpu_s: float, report: Callable[[dict[str, Any]], None]) -> int:
    """Use this much CPU, as a parse would; the child's pid."""
    until = time.process_time() + cpu_s
    while time.process_time() < until:
        pass
    return os.getpid()


def crash(report: Callable[[dict[str, Any]], None]) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


_warmed_by: int | None = None


def warm_up(seconds: float, report: Callable[[dict[str, Any]], None]) -> None:
    """What a worker runs in each child before it polls (importing Docling, building the
    parser): takes a while, and marks the child warm."""
    global _warmed_by
    time.sleep(seconds)
    _warmed_by = os.getpid()


def warmed(report: Callable[[dict[str, Any]], None]) -> tuple[int, int | None]:
    """The child's pid, and the pid that warmed it (None: it never ran warm_up)."""
    return os.getpid(), _warmed_by
