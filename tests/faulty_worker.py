"""A worker with faults injected from outside the product code, for tests that need a worker
to die or to be slow at a chosen moment:

    python -m tests.faulty_worker --queue cpu

runs the workers ``docindex worker --queue cpu`` runs (``workers.factory.build_workers``),
with a Temporal activity interceptor set up from this process's environment:

- ``FAULT_KILL_ON_SHA256=<sha256>``: the process SIGKILLs itself as an activity on the
  document with that SHA-256 starts, as a segfault or an out-of-memory kill in Docling would.
- ``FAULT_DELAY_AFTER_HEARTBEAT_S=<seconds>``: after each heartbeat of ``parse_page_range``
  (a checkpoint: a few pages saved) the process stalls this long, so a test can catch a page
  range half-way. ``activity.heartbeat`` is synchronous, so the stall holds the worker's
  event loop, as a busy worker's would; keep it well under the heartbeat timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ActivityOutboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from docindex.config import get_settings
from docindex.temporal_client import connect
from workers.factory import Queue, build_workers

log = logging.getLogger("tests.faulty_worker")

SLOWED_ACTIVITY = "parse_page_range"


class Faults(Interceptor):
    def __init__(self, kill_on_sha256: str | None = None, delay_after_heartbeat_s: float = 0.0):
        self.kill_on_sha256 = kill_on_sha256
        self.delay_after_heartbeat_s = delay_after_heartbeat_s

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Faults:
        return cls(
            kill_on_sha256=env.get("FAULT_KILL_ON_SHA256") or None,
            delay_after_heartbeat_s=float(env.get("FAULT_DELAY_AFTER_HEARTBEAT_S") or 0),
        )

    def __str__(self) -> str:
        return (
            f"kill on sha256 {self.kill_on_sha256 or '-'}, "
            f"{self.delay_after_heartbeat_s}s after each {SLOWED_ACTIVITY} heartbeat"
        )

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, faults: Faults) -> None:
        super().__init__(next)
        self.faults = faults

    def init(self, outbound: ActivityOutboundInterceptor) -> None:
        delay = self.faults.delay_after_heartbeat_s
        slowed = delay and activity.info().activity_type == SLOWED_ACTIVITY
        super().init(_Slow(outbound, delay) if slowed else outbound)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        sha256 = self.faults.kill_on_sha256
        if sha256 and any(sha256 in _sha256s(arg) for arg in input.args):
            log.warning("FAULT: %s on %s kills this worker", activity.info().activity_type, sha256)
            os.kill(os.getpid(), signal.SIGKILL)
        return await super().execute_activity(input)


class _Slow(ActivityOutboundInterceptor):
    def __init__(self, next: ActivityOutboundInterceptor, delay_s: float) -> None:
        super().__init__(next)
        self.delay_s = delay_s

    def heartbeat(self, *details: Any) -> None:
        super().heartbeat(*details)
        time.sleep(self.delay_s)


def _sha256s(value: Any, depth: int = 2) -> Iterator[str]:
    """The ``sha256`` of an activity's input, or of a model it holds (a document)."""
    if isinstance(found := getattr(value, "sha256", None), str):
        yield found
    if depth and hasattr(value, "__dict__"):
        for field in vars(value).values():
            yield from _sha256s(field, depth - 1)


async def run(queue: Queue, faults: Faults) -> None:
    settings = get_settings()
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    url = settings.database_url or ""
    async with build_workers(queue, client, settings, url, interceptors=[faults]) as workers:
        async with contextlib.AsyncExitStack() as running:
            for worker in workers:
                await running.enter_async_context(worker)
            log.warning("FAULTS ON in this %s worker: %s", queue.value, faults)
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.faulty_worker")
    parser.add_argument("--queue", required=True, choices=[q.value for q in Queue])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(Queue(args.queue), Faults.from_env()))
    # A parse cancelled at shutdown keeps its thread (Docling cannot be interrupted); its
    # activity was handed back already, so do not wait for it.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
