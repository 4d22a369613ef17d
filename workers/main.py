"""``docindex worker --queue X``: run one worker until SIGINT/SIGTERM, then drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from docindex.config import Settings
from docindex.metrics import worker_runtime
from docindex.telemetry import setup_tracing
from docindex.temporal_client import connect

from .factory import Queue, build_workers

log = logging.getLogger(__name__)


async def run_worker(queue: Queue, settings: Settings) -> None:
    if settings.database_url is None and queue in (Queue.WORKFLOW, Queue.CPU):
        raise SystemExit("DOCINDEX_DATABASE_URL is required for a worker")
    setup_tracing(f"docindex-worker-{queue.value}")
    # Prometheus: the SDK's metrics and ours, on DOCINDEX_METRICS_PORT when set.
    client = await connect(settings, runtime=worker_runtime(settings.metrics_port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_workers(queue, client, settings, settings.database_url or "") as workers:
        async with contextlib.AsyncExitStack() as running:
            for worker in workers:
                await running.enter_async_context(worker)
            await stop.wait()
            log.info("shutting down %s worker", queue.value)
