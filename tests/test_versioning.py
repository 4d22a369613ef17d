"""Worker Versioning: a run in flight finishes on the version it started on.

Workers of build v1 run a deployment of this test's own (its own task queues too). A run of
two documents, one at a time, starts on them; its first document waits for its parse, v1's
CPU worker having stopped. Workers of build v2 start, of every kind, and v2 becomes current
mid-run. A run started then goes to v2 and completes, while v2's CPU worker leaves the v1
run's parse alone: a pinned run's activities go to workers of its own version only
(docs/decisions.md, "Worker Versioning"). Once a v1 CPU worker polls again, the open run
completes on v1: every workflow task and activity of it and of both its documents, the
second started after v2 became current. The new run's all ran on v2.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.deployment.v1 import WorkerDeploymentVersion
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.api.workflowservice.v1 import DescribeWorkerDeploymentVersionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import VersioningBehavior
from temporalio.service import RPCError, RPCStatusCode

from docindex.config import Settings
from docindex.ids import document_workflow_id
from workers.factory import Queue, build_workers
from workers.versioning import current_build_id, set_current_version

from .conftest import run_workers
from .helpers import app_with, wait_for_run
from .test_runbook import eventually, temporal, temporal_json


def note() -> bytes:
    return f"Versioning note {uuid.uuid4()}: the ferry keeps to its timetable.\n".encode() * 5


async def versions_of(handle: WorkflowHandle[Any, Any]) -> tuple[int, str, set[str], set[str]]:
    """The workflow's versioning behaviour and build id as the server records them, and the
    build ids of the workers that completed its workflow tasks and ran its activities."""
    description = (await handle.describe()).raw_description
    info = description.workflow_execution_info.versioning_info
    tasks, activities = set(), set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            tasks.add(event.workflow_task_completed_event_attributes.deployment_version.build_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            activities.add(event.activity_task_started_event_attributes.worker_version.build_id)
    return info.behavior, info.deployment_version.build_id, tasks, activities


async def queues_of(client: Client, version: Settings) -> set[str]:
    """The task queues the server counts in ``version`` (polled by its workers)."""
    request = DescribeWorkerDeploymentVersionRequest(
        namespace=client.namespace,
        deployment_version=WorkerDeploymentVersion(
            deployment_name=version.deployment_name, build_id=version.build_id
        ),
    )
    try:
        response = await client.workflow_service.describe_worker_deployment_version(request)
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        return set()
    return {q.name for q in response.worker_deployment_version_info.task_queue_infos}


async def polled(client: Client, version: Settings, *queues: str, limit_s: float = 30.0) -> None:
    """Wait until the server counts ``queues`` among the task queues of ``version``."""
    await eventually(lambda: queues_of(client, version), lambda seen: set(queues) <= seen, limit_s)


async def open_on(client: Client, version: Settings) -> str:
    """The runbook's count of the open workflows pinned to a version."""
    query = (
        f"TemporalWorkerDeploymentVersion = '{version.deployment_name}:{version.build_id}' "
        "AND ExecutionStatus = 'Running'"
    )
    return (await temporal(client, "workflow", "count", "--query", query)).stdout.strip()


async def started(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        await handle.describe()
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
        return False
    return True


async def pending_activity(handles: list[WorkflowHandle[Any, Any]], limit_s: float = 60.0) -> Any:
    """The one workflow of ``handles`` that has started, and its pending activity, once it
    has one."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        for handle in handles:
            if await started(handle):
                pending = (await handle.describe()).raw_description.pending_activities
                if pending:
                    return handle, pending[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"none of {[h.id for h in handles]} scheduled an activity in {limit_s}s")


async def test_an_open_run_finishes_on_v1_while_a_new_run_goes_to_v2(
    client: Client, settings: Settings
) -> None:
    suffix = uuid.uuid4().hex[:6]
    queues = {
        "workflow_task_queue": f"versioning-wf-{suffix}",
        "cpu_task_queue": f"versioning-cpu-{suffix}",
        "gpu_task_queue": f"versioning-gpu-{suffix}",
        "llm_task_queue": f"versioning-llm-{suffix}",
        "embed_api_task_queue": f"versioning-embed-api-{suffix}",
    }
    base = settings.model_copy(update={"deployment_name": f"versioning-{suffix}", **queues})
    v1 = base.model_copy(update={"build_id": "v1"})
    v2 = base.model_copy(update={"build_id": "v2"})
    url = settings.database_url or ""

    async with contextlib.AsyncExitStack() as stack:

        async def start(version: Settings, *kinds: Queue) -> None:
            workers = []
            for kind in kinds:
                workers += await stack.enter_async_context(
                    build_workers(kind, client, version, url)
                )
            await stack.enter_async_context(run_workers(workers))

        await start(v1, Queue.WORKFLOW, Queue.GPU, Queue.HOSTED)
        # v1's CPU worker polls, then stops: the run's document waits for its parse. (On a
        # queue its version never polled, a pinned run's activity would go to the queue's
        # current version instead.)
        async with build_workers(Queue.CPU, client, v1, url) as cpu, run_workers(cpu):
            await polled(client, v1, v1.cpu_task_queue)
        await set_current_version(client, v1)
        # One document at a time: the old run's second document starts once v2 is current.
        _, http = await stack.enter_async_context(
            app_with(settings, client, max_concurrent_documents=1, **queues)
        )

        files = [("files", (f"old-{i}.txt", note())) for i in range(2)]
        old = (await http.post("/v1/documents", files=files)).json()
        old_docs = [
            client.get_workflow_handle(document_workflow_id(old["run_id"], d["document_id"]))
            for d in old["documents"]
        ]
        first, waiting = await pending_activity(old_docs)

        # v2, every kind, ramped and then made current while the v1 run is open, with the
        # runbook's commands (docs/operations.md, "Rolling out a workflow change").
        await start(v2, Queue.WORKFLOW, Queue.CPU, Queue.GPU, Queue.HOSTED)
        await polled(client, v2, *await queues_of(client, v1))
        name = ["--deployment-name", base.deployment_name]
        describe = ["worker", "deployment", "describe", "--name", base.deployment_name]
        await temporal(
            client, "worker", "deployment", "set-ramping-version", *name,
            "--build-id", "v2", "--percentage", "10", "--yes",
        )  # fmt: skip
        routing = (await temporal_json(client, *describe))["routingConfig"]
        assert routing["currentVersionBuildID"] == "v1"
        assert (routing["rampingVersionBuildID"], routing["rampingVersionPercentage"]) == ("v2", 10)
        await temporal(
            client, "worker", "deployment", "set-current-version", *name,
            "--build-id", "v2", "--yes",
        )  # fmt: skip
        routing = (await temporal_json(client, *describe))["routingConfig"]
        assert routing["currentVersionBuildID"] == "v2"
        assert not routing.get("rampingVersionBuildID")
        assert await current_build_id(client, base) == "v2"

        new = (await http.post("/v1/documents", files={"files": ("new.txt", note())})).json()
        new_run = await wait_for_run(http, new["run_id"], limit_s=120)
        assert new_run["status"] == "completed", new_run
        assert [d["status"] for d in new_run["documents"]] == ["completed"]

        # v2's CPU worker polled the queue all along, and left the v1 run's parse alone.
        old_run = (await http.get(f"/v1/runs/{old['run_id']}")).json()
        assert old_run["status"] == "running", old_run
        assert [await started(h) for h in old_docs].count(True) == 1
        _, still = await pending_activity([first])
        assert still.activity_type.name == waiting.activity_type.name
        assert still.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
        assert still.attempt == 1
        # v1 has not drained: the run and its first document are open on it.
        await eventually(lambda: open_on(client, v1), lambda total: total == "Total: 2")
        v1_info = await temporal_json(
            client, "worker", "deployment", "describe-version", *name, "--build-id", "v1"
        )
        assert v1_info["drainageInfo"]["drainageStatus"] == "draining"

        # A v1 CPU worker comes back: the open run completes, on v1, both documents.
        await start(v1, Queue.CPU)
        old_run = await wait_for_run(http, old["run_id"], limit_s=120)
        assert old_run["status"] == "completed", old_run
        assert [d["status"] for d in old_run["documents"]] == ["completed"] * 2
        # Nothing is open on v1 any more: its workers may stop.
        await eventually(lambda: open_on(client, v1), lambda total: total == "Total: 0")

    new_doc = document_workflow_id(new["run_id"], new["documents"][0]["document_id"])
    pinned = VersioningBehavior.PINNED.value
    for run_id, doc_ids, build in [
        (old["workflow_id"], [h.id for h in old_docs], "v1"),
        (new["workflow_id"], [new_doc], "v2"),
    ]:
        # The run: every workflow task of it, on its build.
        behavior, recorded, tasks, _ = await versions_of(client.get_workflow_handle(run_id))
        assert (behavior, recorded, tasks) == (pinned, build, {build}), run_id
        # Its documents (a child inherits its parent's version, even one started after v2
        # became current): workflow tasks, and the parse and embedding activities.
        for doc_id in doc_ids:
            versions = await versions_of(client.get_workflow_handle(doc_id))
            assert versions == (pinned, build, {build}, {build}), doc_id


def test_the_build_id_follows_the_workflow_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default build id hashes the workflow code and what it runs or sends, not the code
    only activities run, nor the settings: a parser fix keeps the build, a workflow edit
    makes a new one."""
    from docindex import build_id

    for package in ("workflows", "activities", "docindex"):
        shutil.copytree(
            build_id.ROOT / package,
            tmp_path / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    monkeypatch.setattr(build_id, "ROOT", tmp_path)
    hashed = {p.relative_to(tmp_path).as_posix() for p in build_id.workflow_sources()}
    assert {"workflows/document.py", "workflows/indexing.py", "docindex/models.py"} <= hashed
    assert not hashed & {"docindex/config.py", "docindex/pipeline/parsing.py"}

    def build() -> str:
        return build_id.workflow_build_id.__wrapped__()

    def edit(path: str) -> None:
        with (tmp_path / path).open("a") as f:
            f.write("\n# edited\n")

    before = build()
    edit("docindex/pipeline/parsing.py")
    edit("docindex/config.py")
    assert build() == before
    edit("workflows/document.py")
    assert build() != before
