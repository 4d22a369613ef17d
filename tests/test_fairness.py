"""One tenant's backlog does not starve another tenant's work.

Two mechanisms, each tested: a run has a bounded window of documents in flight, and every
task of a run carries its tenant as Temporal's fairness key, so the server dispatches a
backlog of several tenants in turn instead of first come, first served.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from docindex.auth import create_api_key
from docindex.config import Settings
from workflows.document import DocumentWorkflow
from workflows.indexing import IndexingWorkflow

from .conftest import temporal_cli
from .helpers import app_with, wait_for_run


def note(i: int) -> bytes:
    return f"Field note {i} {uuid.uuid4()}: the heron waited by the weir.\n".encode() * 5


async def second_tenant(app: object) -> httpx.AsyncClient:
    key = await create_api_key(app.state.resources.pool, f"t-{uuid.uuid4().hex[:10]}")  # type: ignore[attr-defined]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        base_url="http://docindex",
        headers={"Authorization": f"Bearer {key}"},
    )


async def test_the_server_serves_a_backlog_of_two_tenants_in_turn(
    settings: Settings, client: Client
) -> None:
    """A backlog of one tenant's runs is waiting when another tenant's run arrives; the
    worker then takes tasks one at a time. First come, first served would start the newcomer
    last; with fairness keys it is among the first."""
    queue = f"fair-{uuid.uuid4().hex[:6]}"
    backlog = 20
    async with app_with(
        settings, client, workflow_task_queue=queue, tenant_max_active_runs=backlog + 5
    ) as (app, big):
        async with await second_tenant(app) as small:
            big_runs = []
            for i in range(backlog):
                response = await big.post("/v1/documents", files={"files": ("n.txt", note(i))})
                assert response.status_code == 202
                big_runs.append(response.json()["workflow_id"])
            response = await small.post("/v1/documents", files={"files": ("n.txt", note(-1))})
            small_run = response.json()["workflow_id"]

            # One slot and one poller: the order tasks start in is the order served.
            worker = Worker(
                client,
                task_queue=queue,
                workflows=[IndexingWorkflow, DocumentWorkflow],
                max_concurrent_workflow_tasks=1,
                max_concurrent_workflow_task_polls=1,
                max_cached_workflows=0,
            )
            async with worker:
                deadline = time.monotonic() + 120
                while await first_task_started(client, small_run) is None:
                    assert time.monotonic() < deadline, "the newcomer's run never started"
                    await asyncio.sleep(0.5)
            small_at = await first_task_started(client, small_run)
            served_before = [
                run
                for run in big_runs
                if (at := await first_task_started(client, run)) is not None and at < small_at
            ]
            for run in [*big_runs, small_run]:
                await client.get_workflow_handle(run).terminate("fairness test over")
    # First come, first served: all of them (measured: 20 of 20 without fairness keys).
    assert len(served_before) <= backlog // 2, f"{len(served_before)} of {backlog} served first"


async def first_task_started(client: Client, workflow_id: str) -> float | None:
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            return event.event_time.ToNanoseconds() / 1e9
    return None


async def test_a_single_document_completes_during_another_tenants_big_run(
    settings: Settings, client: Client, workers: None
) -> None:
    """End to end, small numbers: a 40-document run and, just after, one document of
    another tenant. The single document is done long before the big run."""
    big_count = 40
    async with app_with(settings, client) as (app, big):
        async with await second_tenant(app) as small:
            bulk = await big.post(
                "/v1/documents",
                files=[("files", (f"{i}.txt", note(i))) for i in range(big_count)],
            )
            assert bulk.status_code == 202
            started = time.monotonic()
            await asyncio.sleep(0.5)
            single = await small.post("/v1/documents", files={"files": ("one.txt", note(-1))})
            done = await wait_for_run(small, single.json()["run_id"], poll_s=0.05)
            small_s = time.monotonic() - started
            final = await wait_for_run(big, bulk.json()["run_id"], limit_s=600, poll_s=0.05)
            big_s = time.monotonic() - started
    assert done["status"] == "completed"
    assert final["status"] == "completed" and final["completed"] == big_count
    assert small_s < 0.5 * big_s, (small_s, big_s)


async def test_the_runbook_sets_a_tenants_weight(client: Client) -> None:
    """docs/operations.md: weights per tenant are set on the server, without a deploy."""
    queue = f"weights-{uuid.uuid4().hex[:6]}"
    command = [
        temporal_cli(),
        "task-queue",
        "config",
        "set",
        "--address",
        client.service_client.config.target_host,
        "--task-queue",
        queue,
        "--task-queue-type",
        "activity",
        "--fairness-key-weight",
        "acme=3.0",
    ]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shown = await asyncio.to_thread(
        subprocess.run,
        [*command[:3], "get", *command[4:10], "-o", "json"],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "acme" in shown.stdout and "3" in shown.stdout
