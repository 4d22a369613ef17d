"""A run's live events (GET /v1/runs/{id}/events): each document's steps in order, the run's
totals last, and a resumed stream gets exactly the rest. Real API over HTTP, real workers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from .conftest import TenantClient
from .helpers import serve, wait_for_run

DOCUMENT_STEPS = [
    ("running", "parse"),
    ("running", "embed"),
    ("running", "store"),
    ("completed", "store"),
]


async def read_stream(
    base_url: str, key: str, run_id: str, last_event_id: str | None = None
) -> list[dict[str, Any]]:
    """Every event of the stream until the server ends it."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=120)) as http,
        http.stream("GET", f"/v1/runs/{run_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = json.loads(value) if name == "data" else value
    return events


def texts(n: int) -> list[tuple[str, bytes]]:
    return [
        (
            f"note-{i}.txt",
            f"Field note {i} {uuid.uuid4()}: the heron waited by the weir.\n".encode() * 30,
        )
        for i in range(n)
    ]


async def test_stream_shows_each_documents_steps_in_order_and_resumes_exactly(
    api_app: Any, tenant_client: TenantClient
) -> None:
    api = await tenant_client()
    key = api.headers["Authorization"].removeprefix("Bearer ")
    async with serve(api_app) as base_url:
        upload = await api.post("/v1/documents", files=[("files", f) for f in texts(3)])
        assert upload.status_code == 202, upload.text
        run_id = upload.json()["run_id"]
        names = {d["document_id"]: d["filename"] for d in upload.json()["documents"]}

        # Connected while the run is going: events arrive live, and the stream ends by itself.
        events = await asyncio.wait_for(read_stream(base_url, key, run_id), 120)
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert [e["event"] for e in events].count("run") == 1 and events[-1]["event"] == "run"
        assert events[-1]["data"] == {
            "run_id": run_id,
            "status": "completed",
            "document_count": 3,
            "completed": 3,
            "failed": 0,
            "cancelled": 0,
            "quarantined": 0,
        }
        for document_id, filename in names.items():
            mine = [e["data"] for e in events if e["data"].get("document_id") == document_id]
            assert [(d["status"], d["step"]) for d in mine] == DOCUMENT_STEPS, mine
            assert {d["filename"] for d in mine} == {filename}
            assert all(set(d) >= {"pages_parsed", "error_type"} for d in mine)

        # Resumed after any event: exactly the rest, then the end.
        middle = events[len(events) // 2]["id"]
        rest = await read_stream(base_url, key, run_id, last_event_id=middle)
        assert rest == events[len(events) // 2 + 1 :]
        assert await read_stream(base_url, key, run_id, last_event_id=events[-1]["id"]) == []
        # A stream of a finished run replays all of it.
        assert await read_stream(base_url, key, run_id) == events
        assert (await wait_for_run(api, run_id))["status"] == "completed"


async def test_a_failed_document_says_why_and_another_tenant_sees_no_stream(
    api_app: Any, tenant_client: TenantClient
) -> None:
    api, other = await tenant_client(), await tenant_client()
    key = api.headers["Authorization"].removeprefix("Bearer ")
    good = texts(1)[0]
    empty = ("empty.txt", b"   \n")
    upload = await api.post("/v1/documents", files=[("files", good), ("files", empty)])
    assert upload.status_code == 202, upload.text
    run_id = upload.json()["run_id"]
    async with serve(api_app) as base_url:
        events = await asyncio.wait_for(read_stream(base_url, key, run_id), 120)
    ends = {e["data"]["filename"]: e["data"] for e in events if e["event"] == "document"}
    assert ends[good[0]]["status"] == "completed"
    assert ends["empty.txt"]["status"] == "failed" and ends["empty.txt"]["error_type"]
    run = events[-1]["data"]
    assert (run["status"], run["completed"], run["failed"]) == ("completed_with_errors", 1, 1)

    assert (await other.get(f"/v1/runs/{run_id}/events")).status_code == 404
    assert (await api.get(f"/v1/runs/{uuid.uuid4()}/events")).status_code == 404


async def test_ingest_wait_follows_the_runs_events(
    api_app: Any, tenant_client: TenantClient, tmp_path: Path
) -> None:
    api = await tenant_client()
    key = api.headers["Authorization"].removeprefix("Bearer ")
    for name, body in texts(2):
        (tmp_path / name).write_bytes(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCINDEX_")}
    async with serve(api_app) as base_url:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            "ingest",
            "--wait",
            str(tmp_path),
            env={**env, "DOCINDEX_API_URL": base_url, "DOCINDEX_API_KEY": key, "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 0, text
    assert "completed 2" in text, text
