"""How a running step says what it has done, without knowing who is listening.

An activity heartbeats ``Progress.details`` while its step runs and sends a checkpoint the
moment the step saves one; ``docindex index-local`` just lets them be."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Progress:
    def __init__(self, on_checkpoint: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.details: dict[str, Any] = {}
        self._on_checkpoint = on_checkpoint

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
