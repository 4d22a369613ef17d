"""Chaos on the real `make run` stack: while a run indexes, kill -9 a CPU worker in the middle
of a parse and a GPU worker in the middle of an embedding (twice each), and the Temporal dev
server once. The supervisor restarts what died; workers and the API reconnect by themselves.
Every document must still end completed, each chunk stored once, and the run's counts, the
documents table and the chunks table must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest_asyncio
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from docindex.config import Settings
from docindex.ids import document_workflow_id
from docindex.temporal_client import connect

from .helpers import TERMINAL_RUN_STATES, dev_env, first_pages, unique

UP_BANNER = "docindex is up"
BIG_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"
SMALL = ["office/docling/word_sample.docx"]
PARSE_STEPS = {"prepare_document", "parse_page_range"}
EMBED_STEPS = {"embed_chunks"}


@dataclass
class Stack:
    """`docindex dev` as a child process, its output collected line by line."""

    process: asyncio.subprocess.Process
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    async def pump(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode(errors="replace"))

    async def wait_for(self, pattern: str, limit_s: float) -> re.Match[str]:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if found := re.search(pattern, line):
                    return found
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.2)
        raise AssertionError(f"{pattern!r} not seen:\n" + "".join(self.lines[-60:]))

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def wait_for_count(self, text: str, n: int, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while self.count(text) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen {n}x:\n" + "".join(self.lines[-60:]))
            await asyncio.sleep(0.2)

    def child(self, *words: str) -> psutil.Process:
        for p in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if all(w in p.cmdline() for w in words):
                    return p
        raise LookupError(f"no child process with {words}")


@pytest_asyncio.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    env = dev_env(
        tmp_path / "state",
        **{
            # A dead worker is noticed in 10 s (not less: a busy CI machine delays beats).
            "DOCINDEX_HEARTBEAT_TIMEOUT_S": "10",
            # Parse each PDF in one activity: a longer window to be caught in.
            "DOCINDEX_SPLIT_PDF_PAGES": "1000",
            # Small chunks, many of them: embedding takes long enough to be caught too.
            "DOCINDEX_CHUNK_MAX_TOKENS": "64",
            # Innocent documents lose attempts when their worker is killed under them; they
            # must not be mistaken for poison here.
            "DOCINDEX_POISON_MAX_ATTEMPTS": "6",
            "COLUMNS": "250",
        },
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "dev",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    running = Stack(process, env)
    pump = asyncio.create_task(running.pump())
    try:
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 90)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        pump.cancel()


async def step_running_on(
    client: Client, run_id: str, document_ids: list[str], steps: set[str], pid: int
) -> bool:
    """Whether worker ``pid`` is running one of ``steps`` for this run right now. (A killed
    worker's activities show as started, under its pid, until their heartbeat timeout.)"""
    for document_id in document_ids:
        handle = client.get_workflow_handle(document_workflow_id(run_id, document_id))
        try:
            pending = (await handle.describe()).raw_description.pending_activities
        except Exception:  # not started yet, or Temporal is restarting
            continue
        for p in pending:
            started = p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            if p.activity_type.name in steps and started:
                if p.last_worker_identity.split("@")[0] == str(pid):
                    return True
    return False


async def test_chaos_kill_workers_and_temporal_mid_run(stack: Stack, corpus: Path) -> None:
    await stack.wait_for(UP_BANNER, limit_s=240)
    database_url = (await stack.wait_for(r"Postgres\s+(postgresql://\S+)", 5)).group(1)
    settings = Settings(data_dir=Path(stack.env["DOCINDEX_DATA_DIR"]))
    key_file = settings.dev_api_key_file
    headers = (
        {"Authorization": f"Bearer {key_file.read_text().strip()}"} if key_file.is_file() else {}
    )
    port = int(stack.env["DOCINDEX_TEMPORAL_PORT"])
    client = await connect(settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"}))

    big = first_pages(corpus / BIG_PDF, 60)
    files = [(f"part-{i}.pdf", unique(big)) for i in range(2)] + [
        (Path(p).name, unique((corpus / p).read_bytes())) for p in SMALL
    ]
    api_url = f"http://127.0.0.1:{stack.env['DOCINDEX_API_PORT']}"
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=30) as http:
        response = await http.post(
            "/v1/documents",
            files=[("files", (name, data, "application/octet-stream")) for name, data in files],
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        run_id = accepted["run_id"]
        document_ids = [d["document_id"] for d in accepted["documents"]]

        # Kills left per part. A worker is killed whenever it runs the step named for it;
        # a step killed once is retried after the heartbeat timeout, so the second kill's
        # moment is certain to come. Temporal goes down once, after the first embedding kill.
        left = {"cpu": 2, "gpu": 2, "temporal": 1}
        steps = {"cpu": PARSE_STEPS, "gpu": EMBED_STEPS}
        deadline = time.monotonic() + 420
        body: dict = {}
        while time.monotonic() < deadline:
            for queue in ("cpu", "gpu"):
                if not left[queue]:
                    continue
                try:
                    worker = stack.child("--queue", queue)
                except LookupError:
                    continue  # being restarted
                if await step_running_on(client, run_id, document_ids, steps[queue], worker.pid):
                    worker.kill()
                    left[queue] -= 1
            if left["temporal"] and left["gpu"] < 2:
                stack.child("start-dev").kill()
                left["temporal"] -= 1
            with contextlib.suppress(httpx.HTTPError):
                reply = await http.get(f"/v1/runs/{run_id}")
                if reply.status_code == 200:
                    body = reply.json()
                    if body["status"] in TERMINAL_RUN_STATES:
                        break
            await asyncio.sleep(0.2)
        assert left == {"cpu": 0, "gpu": 0, "temporal": 0}, (left, body)
        assert body.get("status") == "completed", body

    # The supervisor saw each death and restarted each part.
    for part, kills in (("cpu-worker", 2), ("gpu-worker", 2), ("temporal", 1)):
        await stack.wait_for_count(f"{part} restarted", kills, 60)
    assert stack.count("cpu-worker exited with code -9") == 2
    assert stack.count("gpu-worker exited with code -9") == 2
    assert stack.count("temporal exited with code -9") == 1

    # Every document completed; counts agree between the run, the documents and the chunks,
    # and no chunk was stored twice.
    assert body["completed"] == len(files) and body["failed"] == 0
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT d.status, d.chunk_count, count(c.chunk_id) AS stored,
                      count(DISTINCT c.ordinal) AS ordinals
               FROM documents d LEFT JOIN chunks c USING (document_id)
               WHERE d.run_id = $1 GROUP BY d.document_id""",
            uuid.UUID(run_id),
        )
    finally:
        await conn.close()
    assert len(rows) == len(files)
    for row in rows:
        assert row["status"] == "completed"
        assert row["chunk_count"] == row["stored"] == row["ordinals"] > 0
    assert sum(d["chunk_count"] for d in body["documents"]) == sum(r["stored"] for r in rows)
