"""``docindex worker --queue X``: run one worker until SIGINT/SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import logging
import signal

from docindex.config import Settings
from docindex.temporal_client import connect

from .factory import Queue, build_worker

log = logging.getLogger(__name__)


async def run_worker(queue: Queue, settings: Settings) -> None:
    if settings.database_url is None and queue is not Queue.GPU:
        raise SystemExit("DOCINDEX_DATABASE_URL is required for a worker")
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(queue, client, settings, settings.database_url or "") as worker:
        async with worker:
            await stop.wait()
            log.info("shutting down %s worker", queue.value)
