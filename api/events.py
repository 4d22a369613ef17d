"""One LISTEN connection per API process, fanning run events out to its SSE streams.

The notification carries only the run id: a stream that is woken reads the run's events
after its cursor from Postgres, so a notification that is missed (the connection dropped,
a stream busy writing) delays an event and never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import asyncpg

from docindex.repository.events import CHANNEL

log = logging.getLogger(__name__)


class EventHub:
    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._subscribers: dict[str, set[asyncio.Event]] = {}
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._listen()
        self._keeper = asyncio.create_task(self._keep_listening())

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    @contextlib.contextmanager
    def subscribe(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever the run may have new events."""
        woken = asyncio.Event()
        self._subscribers.setdefault(run_id, set()).add(woken)
        try:
            yield woken
        finally:
            waiting = self._subscribers.get(run_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._subscribers[run_id]

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self._url)
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(lambda _: self._lost.set())
        self._conn = conn
        self._lost.clear()

    async def _keep_listening(self) -> None:
        """Listen again after the connection is lost; every stream then reads once more."""
        while True:
            await self._lost.wait()
            log.warning("run events: LISTEN connection lost; reconnecting")
            delay = 0.5
            while True:
                try:
                    await self._listen()
                    break
                except (OSError, asyncpg.PostgresError):
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            self._wake_all()

    def _notified(self, _conn: object, _pid: int, _channel: str, run_id: str) -> None:
        for woken in self._subscribers.get(run_id, ()):
            woken.set()

    def _wake_all(self) -> None:
        for waiting in self._subscribers.values():
            for woken in waiting:
                woken.set()
