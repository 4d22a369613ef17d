"""``docindex worker --queue X``: run one worker until SIGINT/SIGTERM, then drain.

Shutdown is graceful: the worker stops polling, running activities get
``DOCINDEX_WORKER_GRACEFUL_SHUTDOWN_S`` to finish, and those still running then are
cancelled and handed back to Temporal, which retries them on another worker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from opentelemetry import trace
from temporalio.client import Client
from temporalio.service import RPCError

from docindex.config import Settings
from docindex.metrics import worker_runtime
from docindex.telemetry import setup_tracing
from docindex.temporal_client import connect

from .factory import Queue, build_workers
from .priority import lower_priority

log = logging.getLogger(__name__)


async def run_worker(queue: Queue, settings: Settings) -> None:
    if settings.database_url is None and queue is Queue.WORKFLOW:
        raise SystemExit("DOCINDEX_DATABASE_URL is required for a worker")
    if queue in (Queue.CPU, Queue.LARGE, Queue.GPU):
        # Before any parse process starts: they inherit it.
        lower_priority(settings.worker_nice)
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
            if queue is Queue.WORKFLOW:
                await _ensure_gc_schedule(client, settings)
            await stop.wait()
            log.info(
                "shutting down %s worker: no new tasks; running ones get %ss to finish",
                queue.value,
                settings.worker_graceful_shutdown_s,
            )
        # Leaving the stack ran Worker.shutdown() on each: every activity has completed,
        # failed or been handed back by now.
    log.info("%s worker stopped", queue.value)
    _exit_if_threads_abandoned()


async def _ensure_gc_schedule(client: Client, settings: Settings) -> None:
    """The blob store's GC runs on a schedule (workflows/gc.py); each workflow worker makes
    sure it exists. Failing to is no reason not to work: the next start tries again."""
    from workflows.gc import ensure_gc_schedule

    try:
        await ensure_gc_schedule(client, settings)
    except RPCError:
        log.warning("could not create or update the GC schedule", exc_info=True)


def _exit_if_threads_abandoned() -> None:
    """A parse cancelled at shutdown keeps its thread busy (Docling cannot be interrupted),
    and Python would wait for it before exiting. Its activity was already handed back and
    its result would be thrown away, so exit now instead of minutes later."""
    from docindex.steps.progress import busy_threads

    busy = busy_threads()
    if not busy:
        return
    log.info("exiting without waiting for %d abandoned thread(s)", busy)
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()  # flush spans: atexit handlers do not run after os._exit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
