"""Hostile documents against a real CPU worker process (issue #17, "parse in a cage").

One worker, its parse processes limited as an operator would (lowered here so the test is
quick): every hostile file ends in a typed terminal state within its budget, the worker is
never killed, and another tenant's document, sent while the attack runs on the same
worker, is indexed. What is measured is printed (``-s``) and written up in
docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client

from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.database import create_pool
from docindex.ids import run_workflow_id
from docindex.runs import record_files
from workflows.indexing_contract import RunSummary

from . import hostile
from .helpers import unique
from .processes import spawn_worker, stop_async, worker_env
from .test_poison import document_row

pytestmark = pytest.mark.hostile

GOOD = "pdf/docling/multi_page.pdf"
# A parse process's limits: small enough that a runaway is stopped in seconds, big enough
# for any honest document of the test corpus.
MEMORY = 3 << 30
CPU_S = 3
# What each hostile file must end as, and within how long of the run's start.
EXPECTED: dict[str, tuple[str, str]] = {
    "bomb.docx": ("failed", "TooLarge"),
    "bomb.xlsx": ("failed", "TooLarge"),
    "entries.docx": ("failed", "TooLarge"),
    "inflates.pdf": ("failed", "TooLarge"),
    "streams.pdf": ("failed", "ResourceLimit"),
    "line.txt": ("failed", "TooLarge"),
    "nested.html": ("failed", "ResourceLimit"),
    "blank-pages.pdf": ("failed", "TooLarge"),
}


def _files() -> list[tuple[str, bytes]]:
    return [
        ("bomb.docx", hostile.zip_bomb_docx()),
        ("bomb.xlsx", hostile.zip_bomb_xlsx()),
        ("entries.docx", hostile.many_entries_zip()),
        ("inflates.pdf", hostile.decompression_bomb_pdf()),
        ("streams.pdf", hostile.pathological_streams_pdf()),
        ("line.txt", hostile.single_line_text()),
        ("nested.html", hostile.deeply_nested_html()),
        ("blank-pages.pdf", hostile.blank_pages_pdf()),
    ]


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its children (the parse processes)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


async def _seconds_to_end(settings: Settings, document_id: str) -> float:
    """From the document's row being recorded to its outcome being recorded."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return float(
            await conn.fetchval(
                "SELECT extract(epoch FROM updated_at - created_at) FROM documents "
                "WHERE document_id = $1",
                uuid.UUID(document_id),
            )
        )
    finally:
        await conn.close()


async def _start(
    client: Client, settings: Settings, tenant: str, files: list[tuple[str, bytes]], queue: str
) -> tuple[str, list[str]]:
    from .helpers import run_input

    pool = await create_pool(settings.database_url or "")
    try:
        run_id, ids = await record_files(
            pool, BlobStore.from_settings(settings), files, tenant_id=tenant
        )
    finally:
        await pool.close()
    await client.start_workflow(
        "IndexingWorkflow",
        run_input(
            settings,
            run_id,
            len(ids),
            cpu_task_queue=queue,
            heartbeat_timeout_s=15.0,
            poison_max_attempts=2,
        ),
        id=run_workflow_id(run_id),
        task_queue=settings.workflow_task_queue,
    )
    return run_id, ids


async def test_hostile_documents_end_typed_and_another_tenant_is_served(
    client: Client, settings: Settings, corpus: Path, tmp_path: Path, api_app: object
) -> None:
    # api_app: the app registers the search attributes the workflows set.
    queue = f"hostile-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        settings,
        client,
        DOCINDEX_CPU_TASK_QUEUE=queue,
        DOCINDEX_CPU_WORKER_CONCURRENCY="2",
        DOCINDEX_PARSE_MEMORY_BYTES=str(MEMORY),
        DOCINDEX_PARSE_CPU_S=str(CPU_S),
    )
    worker = await spawn_worker("cpu", env, tmp_path / "cpu.log")
    files = _files()
    peak = 0
    spawned = time.monotonic()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, _tree_rss(worker.pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    try:
        started = time.monotonic()
        print(f"worker spawned; the attack starts {started - spawned:.1f}s later")
        attack, ids = await _start(client, settings, "attacker", files, queue)
        await asyncio.sleep(1.0)  # the attack is under way
        good_sent = time.monotonic()
        victim, (good_id,) = await _start(
            client, settings, "victim", [("good.pdf", unique((corpus / GOOD).read_bytes()))], queue
        )
        victim_run = client.get_workflow_handle(run_workflow_id(victim), result_type=RunSummary)
        attack_run = client.get_workflow_handle(run_workflow_id(attack), result_type=RunSummary)
        victim_summary = await asyncio.wait_for(victim_run.result(), timeout=240)
        victim_s = time.monotonic() - good_sent
        attack_summary = await asyncio.wait_for(attack_run.result(), timeout=240)
        attack_s = time.monotonic() - started
        worker_alive = worker.returncode is None
    finally:
        sampler.cancel()
        await stop_async([worker])

    ended = {}
    for (name, _), document_id in zip(files, ids, strict=True):
        row = await document_row(settings, document_id)
        ended[name] = (row["status"], row["error_type"] or "")
        took = await _seconds_to_end(settings, document_id)
        print(f"{name}: {row['status']} {row['error_type']} after {took:.1f}s: {row['error']}")
    print(
        f"attack over in {attack_s:.1f}s; victim indexed in {victim_s:.1f}s; "
        f"peak RSS of worker and parse processes {peak / 2**20:.0f} MiB"
    )
    assert ended == EXPECTED
    assert worker_alive  # nothing killed the worker: it served until stopped
    assert (victim_summary.status, victim_summary.completed) == ("completed", 1)
    assert (await document_row(settings, good_id))["status"] == "completed"
    assert attack_summary.failed == sum(1 for s, _ in EXPECTED.values() if s == "failed")
