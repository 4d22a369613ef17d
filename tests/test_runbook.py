"""The operator runbook (docs/operations.md), recipe by recipe: every `temporal` command it
gives runs here, as written there, against the session's dev server, so the runbook cannot
rot.

The CLI runs in a thread: the workers share this event loop, and a command that needs a
worker (a query) would wait forever on a blocked loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client

from docindex.config import Settings

from .conftest import temporal_cli
from .helpers import first_pages, unique, wait_for_run
from .test_cancel import start_run, wait_until_parsing_ranges

CRAZYONES = "pdf/pypdf/crazyones.pdf"
EMPTY = "broken/empty.pdf"
BIG_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"  # 117 pages

# The runbook's jq filters, run on the CLI's JSON where jq is installed.
# One line per failed document: workflow id, file name, error type.
FAILED_JQ = (
    ".[] | [.execution.workflowId, .memo.fields.filename, "
    "(.searchAttributes.indexedFields.ErrorType.data | @base64d | fromjson)] | @tsv"
)
# Why a document failed: error type and message.
REASON_JQ = (
    ".closeEvent.workflowExecutionFailedEventAttributes.failure"
    " | [.applicationFailureInfo.type, .message] | @tsv"
)
# A document's pending activities: id, type, state, attempt, worker, heartbeat details.
PENDING_JQ = (
    ".pendingActivities[]? | [.activityId, .activityType.name, .state, .attempt,"
    " .lastWorkerIdentity, (.heartbeatDetails[0] | tojson)] | @tsv"
)
# Where each step was scheduled from: activity, the WorkflowTaskCompleted event to reset to.
STEPS_JQ = (
    ".events[] | (.activityTaskScheduledEventAttributes // empty"
    " | [.activityType.name, .workflowTaskCompletedEventId]),"
    ' (.markerRecordedEventAttributes // empty | select(.markerName == "core_local_activity")'
    " | [(.details.data.payloads[0].data | @base64d | fromjson | .activity_type),"
    " .workflowTaskCompletedEventId]) | @tsv"
)


async def temporal(
    client: Client, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``temporal ARGS``, pointed at the session's server the way an operator's shell is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env.update(
        TEMPORAL_ADDRESS=client.service_client.config.target_host, TEMPORAL_NAMESPACE="default"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [temporal_cli(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert done.returncode == 0, f"temporal {' '.join(args)}: {done.stderr}"
    return done


async def temporal_json(client: Client, *args: str) -> Any:
    return json.loads((await temporal(client, *args, "-o", "json")).stdout)


async def jq(program: str, json_text: str) -> str | None:
    """``jq -r PROGRAM`` over the CLI's output; None where jq is not installed."""
    if not shutil.which("jq"):
        return None
    done = await asyncio.to_thread(
        subprocess.run,
        ["jq", "-r", program],
        input=json_text,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


async def eventually(
    probe: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], limit_s: float = 10
) -> Any:
    """Poll ``probe`` until ``ok`` holds: visibility (list, count) is eventually consistent."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not as expected after {limit_s}s: {value!r}")
        await asyncio.sleep(0.2)


def search_attribute(execution: dict[str, Any], name: str) -> Any:
    """A search attribute as `-o json` prints it: a base64 JSON payload."""
    field = execution["searchAttributes"]["indexedFields"].get(name)
    return json.loads(base64.b64decode(field["data"])) if field else None


async def pending_activities(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    described = await temporal_json(client, "workflow", "describe", "--workflow-id", workflow_id)
    return described.get("pendingActivities", [])


async def history(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    shown = await temporal_json(client, "workflow", "show", "--workflow-id", workflow_id)
    return shown["events"]


def scheduled(events: list[dict[str, Any]], activity: str) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"
        and e["activityTaskScheduledEventAttributes"]["activityType"]["name"] == activity
    ]


def local_activities(events: list[dict[str, Any]], activity: str) -> list[dict[str, Any]]:
    """Marker events of a workflow's local activities of type ``activity``."""
    found = []
    for e in events:
        attrs = e.get("markerRecordedEventAttributes")
        if not attrs or attrs["markerName"] != "core_local_activity":
            continue
        data = json.loads(base64.b64decode(attrs["details"]["data"]["payloads"][0]["data"]))
        if data["activity_type"] == activity:
            found.append(e)
    return found


async def document(api: httpx.AsyncClient, document_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/documents/{document_id}")
    response.raise_for_status()
    return response.json()


async def test_recipe_1_2_failed_documents_their_reasons_and_status(
    api: httpx.AsyncClient, client: Client, corpus: Path
) -> None:
    files = [
        ("files", ("crazyones.pdf", (corpus / CRAZYONES).read_bytes())),
        ("files", ("empty.pdf", (corpus / EMPTY).read_bytes())),
    ]
    accepted = (await api.post("/v1/documents", files=files)).json()
    run_id = accepted["run_id"]
    good, bad = (d["document_id"] for d in accepted["documents"])
    run = await wait_for_run(api, run_id, limit_s=60)
    assert run["status"] == "completed_with_errors"
    good_wf, bad_wf = f"index-doc/{run_id}/{good}", f"index-doc/{run_id}/{bad}"

    # 1. Everything of a run: the run itself and one workflow per document.
    listed = await eventually(
        lambda: temporal_json(client, "workflow", "list", "--query", f"IndexingRunId='{run_id}'"),
        lambda rows: (
            len(rows) == 3 and all(r["status"] != "WORKFLOW_EXECUTION_STATUS_RUNNING" for r in rows)
        ),
    )
    by_id = {r["execution"]["workflowId"]: r for r in listed}
    assert set(by_id) == {f"index-run/{run_id}", good_wf, bad_wf}
    assert search_attribute(by_id[good_wf], "DocStatus") == "completed"
    assert by_id[bad_wf]["status"] == "WORKFLOW_EXECUTION_STATUS_FAILED"

    # ...its failed documents, with file name and error type.
    failed_query = f"IndexingRunId='{run_id}' AND DocStatus='failed'"
    failed = await eventually(
        lambda: temporal_json(client, "workflow", "list", "--query", failed_query),
        lambda rows: len(rows) == 1,
    )
    assert failed[0]["execution"]["workflowId"] == bad_wf
    text = (await temporal(client, "workflow", "list", "--query", failed_query)).stdout
    assert bad_wf in text and good_wf not in text
    assert failed[0]["memo"]["fields"]["filename"] == "empty.pdf"
    assert search_attribute(failed[0], "ErrorType") == "EmptyDocument"
    raw = await temporal(client, "workflow", "list", "--query", failed_query, "-o", "json")
    assert await jq(FAILED_JQ, raw.stdout) in (None, f"{bad_wf}\tempty.pdf\tEmptyDocument")

    # ...the full reason, from the failed workflow's close event.
    raw = await temporal(client, "workflow", "describe", "--workflow-id", bad_wf, "-o", "json")
    failure = json.loads(raw.stdout)["closeEvent"]["workflowExecutionFailedEventAttributes"][
        "failure"
    ]
    assert failure["applicationFailureInfo"]["type"] == "EmptyDocument"
    bad_row = next(d for d in run["documents"] if d["document_id"] == bad)
    assert failure["message"] == bad_row["error"]
    assert await jq(REASON_JQ, raw.stdout) in (None, f"EmptyDocument\t{bad_row['error']}")

    # ...and every document that failed with one error type, across runs, lately.
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    by_type = f"DocStatus='failed' AND ErrorType='EmptyDocument' AND CloseTime > '{since}'"
    across = await eventually(
        lambda: temporal_json(client, "workflow", "list", "--query", by_type),
        lambda rows: bad_wf in {r["execution"]["workflowId"] for r in rows},
    )
    assert {search_attribute(r, "ErrorType") for r in across} == {"EmptyDocument"}
    counted = await temporal_json(client, "workflow", "count", "--query", by_type)
    assert int(counted.get("count", 0)) == len(across)

    # 2. Status by query, on the run and on one document (closed ones answer too).
    (progress,) = (
        await temporal_json(
            client, "workflow", "query", "--workflow-id", f"index-run/{run_id}", "--name", "status"
        )
    )["queryResult"]
    assert (progress["status"], progress["completed"], progress["failed"]) == (
        "completed_with_errors",
        1,
        1,
    )
    (doc_progress,) = (
        await temporal_json(
            client, "workflow", "query", "--workflow-id", bad_wf, "--name", "status"
        )
    )["queryResult"]
    assert (doc_progress["status"], doc_progress["error_type"]) == ("failed", "EmptyDocument")


async def test_recipe_3_6_heartbeats_and_pausing_page_ranges(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    # 117 pages in 10-page ranges: 12 ranges for two CPU slots, so for several seconds
    # most of them wait for a worker, which is what a pause can catch. Each range saves
    # (and beats) after 5 pages, so a running one shows its progress for its last 5.
    run_id, (doc,) = await start_run(
        client,
        settings,
        [("GeoTopo.pdf", unique((corpus / BIG_PDF).read_bytes()))],
        split_pdf_pages=2,
        range_pages=10,
        max_parallel_ranges=12,
        heartbeat_timeout_s=5.0,
    )
    wf = f"index-doc/{run_id}/{doc}"
    await wait_until_parsing_ranges(client, run_id, doc)

    async def ranges() -> dict[str, dict[str, Any]]:
        return {
            p["activityId"]: p
            for p in await pending_activities(client, wf)
            if p["activityType"]["name"] == "parse_page_range"
        }

    # 6. Pause two ranges that are waiting for a worker: neither starts until unpaused.
    # (Twelve ranges, two CPU slots: most of them wait at first.)
    paused: list[str] = []
    while len(paused) < 2:
        waiting = [
            a
            for a, p in (await ranges()).items()
            if p["state"] == "PENDING_ACTIVITY_STATE_SCHEDULED" and a not in paused
        ]
        assert waiting, "no waiting page range left to pause"
        activity_id = waiting[-1]
        await temporal(
            client,
            "activity",
            "pause",
            "--workflow-id",
            wf,
            "--activity-id",
            activity_id,
            "--reason",
            "provider outage",
        )
        state = (await ranges()).get(activity_id, {}).get("state")
        if state == "PENDING_ACTIVITY_STATE_PAUSED":
            paused.append(activity_id)
        else:  # a worker took it in between: let that one run and pause another
            await temporal(
                client,
                "activity",
                "unpause",
                "--workflow-id",
                wf,
                "--activity-id",
                activity_id,
                check=False,
            )

    # 3. Meanwhile a running range shows its progress, attempt and worker.
    async def described() -> str:
        raw = await temporal(client, "workflow", "describe", "--workflow-id", wf, "-o", "json")
        return raw.stdout

    def beating(raw: str) -> list[dict[str, Any]]:
        # Running ones: a range a worker took just before its pause landed has beaten too,
        # and keeps its last details while it stays paused.
        return [
            p
            for p in json.loads(raw).get("pendingActivities", [])
            if p.get("heartbeatDetails") and p.get("state") == "PENDING_ACTIVITY_STATE_STARTED"
        ]

    raw = await eventually(described, lambda raw: bool(beating(raw)), limit_s=30)
    (first_beating, *_) = beating(raw)
    (details,) = first_beating["heartbeatDetails"]
    assert {"pages_done", "pages_total", "resume_after_page"} <= set(details)
    # Half-way: its first 5 pages saved, the rest of its at most 10 still parsing.
    assert 0 < details["pages_done"] < details["pages_total"] <= 10
    assert first_beating["attempt"] >= 1 and first_beating["lastWorkerIdentity"]
    assert first_beating["state"] == "PENDING_ACTIVITY_STATE_STARTED"
    lines = await jq(PENDING_JQ, raw)
    assert lines is None or (
        "\t".join(
            [
                first_beating["activityId"],
                "parse_page_range",
                "PENDING_ACTIVITY_STATE_STARTED",
                "1",
                first_beating["lastWorkerIdentity"],
                json.dumps(details, separators=(",", ":")),
            ]
        )
        in lines.splitlines()
    )

    # Every other range finishes; the paused ones stay, never started, and so does the
    # document: still parsing, all but the held ranges' pages done.
    held = await eventually(
        lambda: pending_activities(client, wf), lambda ps: len(ps) == 2, limit_s=30
    )
    assert sorted(p["activityId"] for p in held) == sorted(paused)
    for p in held:
        assert p["state"] == "PENDING_ACTIVITY_STATE_PAUSED" and p["paused"] is True
        assert p["pauseInfo"]["manual"]["reason"] == "provider outage"
        assert "lastStartedTime" not in p
    await eventually(
        lambda: temporal_json(
            client, "workflow", "list", "--query", "TemporalPauseInfo IS NOT NULL"
        ),
        lambda rows: wf in {r["execution"]["workflowId"] for r in rows},
    )
    (live,) = (
        await temporal_json(client, "workflow", "query", "--workflow-id", wf, "--name", "status")
    )["queryResult"]
    assert (live["status"], live["step"], live["pages"]) == ("running", "parse", 117)
    assert 117 - 20 <= live["pages_parsed"] < 117  # two held ranges of at most 10 pages
    assert (await document(api, doc))["status"] == "running"
    text = (await temporal(client, "workflow", "describe", "--workflow-id", wf)).stdout
    assert "Pending Activities: 2" in text and "Paused" in text

    # A long outage: give the held step more attempts before it can run out of them.
    first, second = paused
    await temporal(
        client,
        "activity",
        "update-options",
        "--workflow-id",
        wf,
        "--activity-id",
        first,
        "--retry-maximum-attempts",
        "100",
    )
    options = (await ranges())[first]["activityOptions"]
    assert options["retryPolicy"]["maximumAttempts"] == 100

    # Unpause one by id: it runs; the other stays paused.
    await temporal(client, "activity", "unpause", "--workflow-id", wf, "--activity-id", first)
    (still,) = await eventually(
        lambda: pending_activities(client, wf), lambda ps: len(ps) == 1, limit_s=30
    )
    assert still["activityId"] == second and still["paused"] is True

    # Unpause the rest of the run in bulk (a batch job), and the document completes.
    job = await temporal_json(
        client,
        "activity",
        "unpause",
        "--query",
        f"IndexingRunId='{run_id}' AND TemporalPauseInfo IS NOT NULL",
        "--yes",
    )
    assert job["batchJobId"]
    run = await wait_for_run(api, run_id, limit_s=60)
    assert run["status"] == "completed"
    finished = await document(api, doc)
    assert finished["pages"] == 117 and finished["chunk_count"] > 0
    events = await history(client, wf)
    scheduled_ids = {
        e["eventId"]: e["activityTaskScheduledEventAttributes"]["activityId"]
        for e in scheduled(events, "parse_page_range")
    }
    attempts = {
        scheduled_ids[e["activityTaskStartedEventAttributes"]["scheduledEventId"]]: e[
            "activityTaskStartedEventAttributes"
        ]["attempt"]
        for e in events
        if e["eventType"] == "EVENT_TYPE_ACTIVITY_TASK_STARTED"
        and e["activityTaskStartedEventAttributes"]["scheduledEventId"] in scheduled_ids
    }
    # Paused before they ran, so they ran once, after the unpause, and nothing failed.
    assert attempts[first] == attempts[second] == 1


async def test_recipe_4_cancel_a_document_and_a_run(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    big = (corpus / BIG_PDF).read_bytes()
    options = {"split_pdf_pages": 20, "range_pages": 10, "heartbeat_timeout_s": 5.0}
    one_run, (one, bystander) = await start_run(
        client,
        settings,
        [("one.pdf", unique(big)), ("crazyones.pdf", (corpus / CRAZYONES).read_bytes())],
        max_concurrent_documents=2,
        **options,
    )
    whole_run, (whole,) = await start_run(client, settings, [("whole.pdf", unique(big))], **options)
    await wait_until_parsing_ranges(client, one_run, one)
    await wait_until_parsing_ranges(client, whole_run, whole)

    # One document: it stops and cleans up; the rest of its run completes.
    await temporal(client, "workflow", "cancel", "--workflow-id", f"index-doc/{one_run}/{one}")
    # The whole run: every document stops and cleans up, and the run ends cancelled.
    await temporal(client, "workflow", "cancel", "--workflow-id", f"index-run/{whole_run}")

    run = await wait_for_run(api, one_run, limit_s=60)
    assert (run["status"], run["completed"], run["cancelled"]) == ("completed_with_errors", 1, 1)
    by_id = {d["document_id"]: d for d in run["documents"]}
    assert (by_id[one]["status"], by_id[one]["error_type"]) == ("cancelled", "Cancelled")
    assert by_id[one]["chunk_count"] == 0
    assert by_id[bystander]["status"] == "completed"

    run = await wait_for_run(api, whole_run, limit_s=60)
    assert (run["status"], run["cancelled"], run["completed"]) == ("cancelled", 1, 0)
    assert (await document(api, whole))["chunk_count"] == 0
    # Postgres records the end just before the workflow closes: poll the close.
    described = await eventually(
        lambda: temporal_json(
            client, "workflow", "describe", "--workflow-id", f"index-run/{whole_run}"
        ),
        lambda d: d["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_CANCELED",
    )
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_CANCELED"


async def api_json(api: httpx.AsyncClient, path: str) -> dict:
    return (await api.get(path)).json()


async def test_recipe_5_terminate_a_run(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    run_id, (big, queued) = await start_run(
        client,
        settings,
        [
            ("GeoTopo.pdf", unique((corpus / BIG_PDF).read_bytes())),
            ("crazyones.pdf", (corpus / CRAZYONES).read_bytes()),
        ],
        max_concurrent_documents=1,
        split_pdf_pages=20,
        range_pages=10,
        heartbeat_timeout_s=5.0,
    )
    await wait_until_parsing_ranges(client, run_id, big)

    await temporal(
        client,
        "workflow",
        "terminate",
        "--workflow-id",
        f"index-run/{run_id}",
        "--reason",
        "runbook: last resort",
    )
    described = await temporal_json(
        client, "workflow", "describe", "--workflow-id", f"index-run/{run_id}"
    )
    assert described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_TERMINATED"
    # The running document is cancelled by the parent-close policy and cleans up...
    # (Wait for the recorded outcome: a live "cancelled" can come before its cleanup.)
    cancelled = await eventually(
        lambda: document(api, big),
        lambda d: d["status"] == "cancelled" and d["chunk_count"] is not None,
        limit_s=30,
    )
    assert cancelled["chunk_count"] == 0
    # The run never recorded its end: the API says so instead of "running"...
    run = await eventually(
        lambda: api_json(api, f"/v1/runs/{run_id}"), lambda r: r["status"] == "terminated"
    )
    assert (await document(api, queued))["status"] == "queued"
    # ...and a retry picks up everything it left unfinished, the never-started one too.
    retried = (await api.post(f"/v1/runs/{run_id}/retry", json={})).json()
    assert sorted(retried["document_ids"]) == sorted([big, queued])
    run = await wait_for_run(api, run_id, limit_s=120)
    assert (run["status"], run["completed"]) == ("completed", 2)


async def test_recipe_5_7_terminate_a_document_then_reset_it(
    default_api: httpx.AsyncClient, client: Client, settings: Settings, corpus: Path
) -> None:
    api = default_api  # runs recorded without the API belong to 'default'
    run_id, (doc, other) = await start_run(
        client,
        settings,
        [
            ("eighteen.pdf", unique(first_pages(corpus / BIG_PDF, 18))),
            ("crazyones.pdf", (corpus / CRAZYONES).read_bytes()),
        ],
        max_concurrent_documents=2,
        split_pdf_pages=2,
        range_pages=2,
        max_parallel_ranges=2,
        heartbeat_timeout_s=3.0,
    )
    wf = f"index-doc/{run_id}/{doc}"
    await wait_until_parsing_ranges(client, run_id, doc)

    # 5. Terminate: the document's workflow stops on the spot and cleans up nothing.
    await temporal(
        client, "workflow", "terminate", "--workflow-id", wf, "--reason", "runbook: stuck"
    )
    run = await wait_for_run(api, run_id, limit_s=60)
    by_id = {d["document_id"]: d for d in run["documents"]}
    assert by_id[other]["status"] == "completed"
    # The run records it as failed (Terminated), so retry and reindex can pick it up.
    assert (by_id[doc]["status"], by_id[doc]["error_type"]) == ("failed", "Terminated")
    assert (run["status"], run["completed"], run["failed"], run["cancelled"]) == (
        "completed_with_errors",
        1,
        1,
        0,
    )
    terminated = await eventually(
        lambda: temporal_json(
            client,
            "workflow",
            "list",
            "--query",
            f"IndexingRunId='{run_id}' AND ExecutionStatus='Terminated'",
        ),
        lambda rows: len(rows) == 1,
    )
    assert terminated[0]["execution"]["workflowId"] == wf
    assert search_attribute(terminated[0], "DocStatus") == "parsing"  # frozen mid-step

    # 7. Reset it to its last workflow task: a new execution carries on from there.
    reset = await temporal_json(
        client,
        "workflow",
        "reset",
        "--workflow-id",
        wf,
        "--type",
        "LastWorkflowTask",
        "--reason",
        "runbook: recover a terminated document",
    )
    described = await eventually(
        lambda: temporal_json(client, "workflow", "describe", "--workflow-id", wf),
        lambda d: d["workflowExecutionInfo"]["status"] != "WORKFLOW_EXECUTION_STATUS_RUNNING",
        limit_s=60,
    )
    info = described["workflowExecutionInfo"]
    assert info["execution"]["runId"] == reset["runId"]
    assert info["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED"
    recovered = await document(api, doc)
    assert (recovered["status"], recovered["pages"]) == ("completed", 18)
    assert recovered["chunk_count"] > 0
    executions = await eventually(
        lambda: temporal_json(client, "workflow", "list", "--query", f"WorkflowId='{wf}'"),
        lambda rows: len(rows) == 2,
    )
    assert sorted(r["status"] for r in executions) == [
        "WORKFLOW_EXECUTION_STATUS_COMPLETED",
        "WORKFLOW_EXECUTION_STATUS_TERMINATED",
    ]


async def test_recipe_7_reset_a_document_to_a_step(
    api: httpx.AsyncClient, client: Client, corpus: Path
) -> None:
    files = [("files", ("crazyones.pdf", (corpus / CRAZYONES).read_bytes()))]
    accepted = (await api.post("/v1/documents", files=files)).json()
    run_id, doc = accepted["run_id"], accepted["documents"][0]["document_id"]
    assert (await wait_for_run(api, run_id, limit_s=60))["status"] == "completed"
    wf = f"index-doc/{run_id}/{doc}"
    before = await temporal_json(client, "workflow", "describe", "--workflow-id", wf)

    # The workflow task that ran the store step (a local activity) is where the document
    # goes back to.
    raw = await temporal(client, "workflow", "show", "--workflow-id", wf, "-o", "json")
    (store,) = local_activities(json.loads(raw.stdout)["events"], "store_document")
    event_id = store["markerRecordedEventAttributes"]["workflowTaskCompletedEventId"]
    steps = await jq(STEPS_JQ, raw.stdout)
    assert steps is None or f"store_document\t{event_id}" in steps.splitlines()
    reset = await temporal_json(
        client,
        "workflow",
        "reset",
        "--workflow-id",
        wf,
        "--event-id",
        str(event_id),
        "--reason",
        "runbook: store again",
    )
    assert reset["runId"] != before["workflowExecutionInfo"]["execution"]["runId"]
    described = await eventually(
        lambda: temporal_json(client, "workflow", "describe", "--workflow-id", wf),
        lambda d: d["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_COMPLETED",
        limit_s=30,
    )
    assert described["workflowExecutionInfo"]["execution"]["runId"] == reset["runId"]

    # The new execution kept parse..embed from before the reset point and ran store again.
    events = await history(client, wf)
    (reset_at,) = [
        e
        for e in events
        if e["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_FAILED"
        and e["workflowTaskFailedEventAttributes"]["cause"]
        == "WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW"
    ]
    (stored_again,) = local_activities(events, "store_document")
    assert int(stored_again["eventId"]) > int(reset_at["eventId"])
    (parsed,) = scheduled(events, "prepare_document")
    assert int(parsed["eventId"]) < int(reset_at["eventId"])
    assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    after = await document(api, doc)
    assert after["status"] == "completed" and after["chunk_count"] >= 1


async def test_recipe_8_batch_cancel_by_query(
    api: httpx.AsyncClient, client: Client, corpus: Path
) -> None:
    files = [("files", ("GeoTopo.pdf", unique((corpus / BIG_PDF).read_bytes())))]
    accepted = (await api.post("/v1/documents", files=files)).json()
    run_id, doc = accepted["run_id"], accepted["documents"][0]["document_id"]
    running = f"IndexingRunId='{run_id}' AND ExecutionStatus='Running'"
    # The run and its document are both visible as running before the batch is sent.
    await eventually(
        lambda: temporal_json(client, "workflow", "count", "--query", running),
        lambda c: int(c.get("count", 0)) == 2,
    )

    job = await temporal_json(
        client,
        "workflow",
        "cancel",
        "--query",
        running,
        "--reason",
        "runbook: bulk cancel",
        "--yes",
    )
    job_id = job["batchJobId"]
    batch = await eventually(
        lambda: temporal_json(client, "batch", "describe", "--job-id", job_id),
        lambda b: b["state"] == "BATCH_OPERATION_STATE_COMPLETED",
        limit_s=30,
    )
    assert batch["query"] == running
    assert batch["totalOperationCount"] == batch["completeOperationCount"] == "2"
    assert int(batch.get("failureOperationCount", 0)) == 0
    jobs = await temporal_json(client, "batch", "list")
    assert job_id in {j["jobId"] for j in jobs}

    await wait_for_run(api, run_id, limit_s=60)
    # The batch cancels the run and its document at once; the document may record its
    # outcome a moment after the run has recorded its end.
    run = await eventually(lambda: api_json(api, f"/v1/runs/{run_id}"), lambda r: r["cancelled"])
    assert (run["status"], run["cancelled"]) == ("cancelled", 1)
    assert (await document(api, doc))["status"] == "cancelled"
    await eventually(
        lambda: temporal_json(client, "workflow", "count", "--query", running),
        lambda c: int(c.get("count", 0)) == 0,  # -o json leaves out zero values
    )
