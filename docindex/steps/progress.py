"""How a running step says what it has done, without knowing who is listening.

An activity heartbeats ``Progress.details`` while its step runs and sends a checkpoint the
moment the step saves one; ``docindex index-local`` just lets them be."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


class Progress:
    def __init__(
        self,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        *,
        stall_s: float | None = None,
    ) -> None:
        self.details: dict[str, Any] = {}
        self._on_checkpoint = on_checkpoint
        # Work watched in a child process (docindex.cage) that shows no sign of life this
        # long is stopped; None: the cage's own default.
        self.stall_s = stall_s
        # While such work runs: when it last showed life (a page done, CPU used).
        self._last_alive: float | None = None

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Signs of life of the work inside count from now until it ends."""
        self._last_alive = time.monotonic()
        try:
            yield
        finally:
            self._last_alive = None

    def alive(self) -> None:
        self._last_alive = time.monotonic()

    def silent_s(self) -> float:
        """How long watched work has shown no sign of life; 0 when none is watched (the
        event loop being free to ask is then the only sign there is)."""
        if self._last_alive is None:
            return 0.0
        return time.monotonic() - self._last_alive

    def update(self, **details: Any) -> None:
        self.details.update(details)

    def checkpoint(self, **details: Any) -> None:
        """Something was saved that a retry will not redo: tell whoever tracks progress now."""
        self.update(**details)
        if self._on_checkpoint is not None:
            self._on_checkpoint(dict(self.details))


# Threads running blocking step work right now. A worker shutting down checks it: a thread
# whose step was cancelled cannot be interrupted (Docling has no cancel), and is not worth
# waiting for.
_busy = 0
_busy_lock = threading.Lock()


def busy_threads() -> int:
    return _busy


def _counted(func: Callable[..., T], *args: Any) -> T:
    global _busy
    with _busy_lock:
        _busy += 1
    try:
        return func(*args)
    finally:
        with _busy_lock:
            _busy -= 1


async def blocking(func: Callable[..., T], *args: Any) -> T:
    """``func(*args)`` in a thread, so the event loop keeps serving (heartbeats above all)."""
    return await asyncio.to_thread(_counted, func, *args)
