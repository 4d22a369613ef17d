"""Workers as separate OS processes, the way they run in production, for tests that kill
them or need several."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from temporalio.client import Client

from docindex.config import Settings

ROOT = Path(__file__).resolve().parents[1]
# The command a worker process runs: the product's, or the test-side worker with faults
# injected from its environment (tests/faulty_worker.py).
WORKER = ("cli", "worker")
FAULTY_WORKER = ("tests.faulty_worker",)


def worker_argv(queue: str, command: Sequence[str] = WORKER) -> list[str]:
    return [sys.executable, "-m", *command, "--queue", queue]


def worker_env(settings: Settings, client: Client, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCINDEX_")}
    env.update(
        {
            "DOCINDEX_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "DOCINDEX_DATABASE_URL": settings.database_url or "",
            "DOCINDEX_BLOB_URL": Path(settings.blob_root).as_uri(),
            "DOCINDEX_WORKFLOW_TASK_QUEUE": settings.workflow_task_queue,
            "DOCINDEX_CPU_TASK_QUEUE": settings.cpu_task_queue,
            "DOCINDEX_GPU_TASK_QUEUE": settings.gpu_task_queue,
            # The session's build: a worker of another would wait for runs that never come.
            "DOCINDEX_BUILD_ID": settings.build_id,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env.update(overrides)
    return env


def start_worker(
    queue: str, env: dict[str, str], log: Path, command: Sequence[str] = WORKER
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            worker_argv(queue, command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


# Async variants, for async tests: in-process workers share the test's event loop, so a test
# must never block it waiting for a process.


async def spawn_worker(
    queue: str, env: dict[str, str], log: Path, command: Sequence[str] = WORKER
) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *worker_argv(queue, command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


async def stop_async(processes: list[asyncio.subprocess.Process], grace_s: float = 30) -> None:
    """SIGTERM, then SIGKILL whatever is still running after ``grace_s``."""
    for p in processes:
        if p.returncode is None:
            p.terminate()
    for p in processes:
        try:
            await asyncio.wait_for(p.wait(), grace_s)
        except TimeoutError:
            p.kill()
            await p.wait()


class KeptAlive:
    """One worker process restarted whenever it dies, like a supervisor or an orchestrator
    would; ``exits`` records how each incarnation ended."""

    def __init__(
        self, queue: str, env: dict[str, str], log: Path, command: Sequence[str] = WORKER
    ) -> None:
        self.queue, self.env, self.log, self.command = queue, env, log, command
        self.exits: list[int] = []
        self.process: asyncio.subprocess.Process | None = None
        self._loop: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KeptAlive:
        self.process = await spawn_worker(self.queue, self.env, self.log, self.command)
        self._loop = asyncio.create_task(self._keep())
        return self

    async def _keep(self) -> None:
        while True:
            assert self.process is not None
            self.exits.append(await self.process.wait())
            self.process = await spawn_worker(self.queue, self.env, self.log, self.command)

    async def __aexit__(self, *_: object) -> None:
        assert self._loop is not None
        self._loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop
        if self.process is not None:
            await stop_async([self.process])
