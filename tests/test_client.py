"""The Python client (docindex.client) and the lists it pages through (GET /v1/documents,
GET /v1/runs): against the real API over the session's Postgres, Temporal and workers, and
against scripted answers for what a healthy API does not do on demand (429s, broken
streams)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from docindex.client import (
    ApiError,
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    StreamEvent,
)
from docindex.models import DocStatus
from docindex.repository.documents import list_documents_query
from docindex.repository.pages import Position
from docindex.repository.runs import list_runs_query

from .conftest import TenantClient

EVENTS_PATH = "/v1/runs/{run_id}/events"


def _text(word: str) -> bytes:
    """A small plain-text document no other test uploads (uploads are deduplicated)."""
    return (f"{word} notes {uuid.uuid4()}: the {word} crossed the valley at noon.\n" * 8).encode()


async def _client(tenant_client: TenantClient, tenant: str | None = None) -> AsyncClient:
    """The client over the in-process app, with a key of a tenant of its own."""
    return AsyncClient(http=await tenant_client(tenant=tenant))


# --- lists over the real API ----------------------------------------------------------------


async def test_lists_page_newest_first_with_no_gap_or_duplicate_while_uploads_arrive(
    tenant_client: TenantClient,
) -> None:
    alice, bob = await _client(tenant_client), await _client(tenant_client)
    runs: list[str] = []
    for n in range(4):
        files = [(f"r{n}-{i}.{'md' if i % 2 else 'txt'}", _text(f"heron{n}{i}")) for i in range(3)]
        runs.append(_run_id(await alice.upload(files)))
    # Newest first, in (created_at, id) order, the same documents whatever the page size.
    whole = (await alice.list_documents(limit=500)).documents
    assert len(whole) == 12
    assert [(d.created_at, d.document_id) for d in whole] == sorted(
        ((d.created_at, d.document_id) for d in whole), reverse=True
    )
    assert [d.run_id for d in whole[::3]] == runs[::-1]

    # Page through while more uploads arrive: pages hold exactly the documents that were
    # there when the first page was read, in order; the new ones are newer than all of them.
    seen: list[str] = []
    page = await alice.list_documents(limit=5)
    late: list[str] = []
    while True:
        seen += [d.document_id for d in page.documents]
        late.append(_run_id(await alice.upload([("late.txt", _text("latecomer"))])))
        if page.next_cursor is None:
            break
        page = await alice.list_documents(limit=5, cursor=page.next_cursor)
    assert seen == [d.document_id for d in whole]
    every = [d async for d in alice.iter_documents(page_size=4)]
    assert [d.run_id for d in every[: len(late)]] == late[::-1]
    assert [d.document_id for d in every[len(late) :]] == seen

    # Runs: the same, across pages of two.
    all_runs = [r.run_id async for r in alice.iter_runs(page_size=2)]
    assert all_runs == late[::-1] + runs[::-1]
    first = await alice.list_runs(limit=2)
    assert [r.run_id for r in first.runs] == all_runs[:2] and first.next_cursor

    # Filters: a run, a glob, a time, a status.
    mine = (await alice.list_documents(run_id=runs[1])).documents
    assert {d.filename for d in mine} == {"r1-0.txt", "r1-1.md", "r1-2.txt"}
    markdown = [d async for d in alice.iter_documents(filename="R*.MD")]
    assert sorted(d.filename for d in markdown) == [f"r{n}-1.md" for n in range(4)]
    newest = whole[0]
    after = [d async for d in alice.iter_documents(created_after=newest.created_at)]
    assert {d.run_id for d in after} == set(late)
    for run_id in [*runs, *late]:
        await alice.wait(run_id, timeout_s=120, poll_s=0.25)
    done = [d async for d in alice.iter_documents(status="completed", page_size=500)]
    assert len(done) == 12 + len(late)
    assert [r async for r in alice.iter_runs(status="running")] == []
    assert len([r async for r in alice.iter_runs(status="completed")]) == len(all_runs)

    # Another tenant sees none of it, with Alice's cursors neither.
    assert (await bob.list_documents()).documents == []
    assert (await bob.list_runs()).runs == []
    borrowed = (await alice.list_documents(limit=2)).next_cursor
    assert (await bob.list_documents(cursor=borrowed)).documents == []
    assert (await bob.list_documents(run_id=runs[0])).documents == []


def _run_id(accepted: Any) -> str:
    assert accepted.run_id is not None, accepted
    return str(accepted.run_id)


async def test_lists_refuse_bad_cursors_limits_and_globs(tenant_client: TenantClient) -> None:
    api = await _client(tenant_client)
    runs_cursor = Position(datetime.now(UTC), str(uuid.uuid4())).cursor("runs")
    for params in (
        {"cursor": "not-a-cursor"},
        {"cursor": runs_cursor},  # another list's
        {"cursor": "x" * 201},
        {"limit": 0},
        {"limit": 501},
        {"filename": "[abc"},
        {"status": "finished"},
        {"run_id": "nope"},
        {"created_after": "2026-01-01T00:00:00"},  # no time zone
    ):
        with pytest.raises(InvalidRequest) as refused:
            await api.list_documents(**params)
        assert refused.value.status == 422, params
    with pytest.raises(InvalidRequest):
        await api.list_runs(cursor=Position(datetime.now(UTC), str(uuid.uuid4())).cursor("x"))
    page = await api.list_runs(cursor=runs_cursor, limit=500)
    assert page.runs == [] and page.next_cursor is None


async def test_list_queries_are_index_range_scans(api_app: Any) -> None:
    """Each page is read from an index in the order served: no sort, no scan of the table.
    The test database is small, so its statistics make any plan cheap (a few rows sorted
    cost nothing): seq scans and sorts are priced out, as a table big enough for this to
    matter would price them, and the plan must still find an index that serves the page."""
    pool = api_app.state.resources.pool
    after = Position(datetime.now(UTC), str(uuid.uuid4()))
    plans = {
        "documents_tenant_created": list_documents_query("t", after=after, filename="*.pdf"),
        "documents_tenant_status_created": list_documents_query(
            "t", status=DocStatus.FAILED, after=after
        ),
        "runs_tenant_created": list_runs_query("t", after=after),
    }
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_sort = off")
        for index, (sql, params) in plans.items():
            async with conn.transaction():  # a savepoint: an index dropped here comes back
                if index == "documents_tenant_status_created":
                    # Reading the tenant's newest rows and filtering them by status would
                    # serve it in order too (the planner picked either, by the statistics
                    # of the moment): without that index, the status index must.
                    await conn.execute("DROP INDEX documents_tenant_created")
                plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
                assert index in plan and "Sort" not in plan, plan


# --- the client over the real API -----------------------------------------------------------


async def test_upload_wait_search_round_trip_and_typed_errors(
    tenant_client: TenantClient, tmp_path: Any
) -> None:
    api = await _client(tenant_client)
    word = f"zanzibarite{uuid.uuid4().hex[:6]}"
    path = tmp_path / "minerals.md"
    path.write_bytes(f"# Minerals\n\nThe {word} crystal glows green under light.\n".encode() * 30)
    sent: list[tuple[int, int]] = []
    accepted = await api.upload(
        [path, ("notes.txt", _text("kestrel"))], progress=lambda s, t: sent.append((s, t))
    )
    total = path.stat().st_size + len(_text("kestrel"))
    assert sent and sent[-1] == (total, total)
    assert [s for s, _ in sent] == sorted(s for s, _ in sent)
    seen: list[str] = []
    run = await api.wait(_run_id(accepted), timeout_s=120, poll_s=0.25, on_status=seen.append)
    assert run.status == "completed" and run.completed == 2 and seen
    hits = (await api.search(word, mode="keyword", top_k=3)).results
    assert hits and hits[0].filename == "minerals.md" and "<mark>" in hits[0].highlight
    doc = await api.get_document(hits[0].document_id)
    assert doc.status == "completed" and doc.run_id == run.run_id

    # The same bytes again: a duplicate, no run.
    again = await api.upload([path])
    assert again.run_id is None and again.documents[0].duplicate
    # Retry, reindex and generations answer typed.
    assert (await api.retry(run.run_id)).document_ids == []
    reindex = await api.reindex(doc.document_id)
    assert reindex.document_ids == [doc.document_id]
    await api.wait(run.run_id, timeout_s=120, poll_s=0.25)
    generations = await api.list_generations()
    assert len(generations) == 1 and generations[0].status == "active"
    assert (await api.get_generation(generations[0].generation_id)).chunk_count >= 2

    # Errors: typed, with the status and the API's detail.
    with pytest.raises(NotFound) as missing:
        await api.get_run(str(uuid.uuid4()))
    assert missing.value.status == 404 and missing.value.detail == "no such run"
    with pytest.raises(Conflict) as conflict:
        await api.cancel(run.run_id)
    assert "already completed" in str(conflict.value.detail)
    with pytest.raises(InvalidRequest) as invalid:
        await api.search("x", filename="[")
    assert isinstance(invalid.value, ApiError) and invalid.value.status == 422
    with pytest.raises(ApiError) as unauthorized:
        await AsyncClient(http=await tenant_client(key="dk_000000000000_nope")).get_run(run.run_id)
    assert unauthorized.value.status == 401


async def test_client_follows_a_runs_event_stream(
    api_app: Any, tenant_client: TenantClient
) -> None:
    paths = api_app.openapi()["paths"]
    if EVENTS_PATH not in paths:
        pytest.skip(f"GET {EVENTS_PATH} is not in this API yet (being built alongside)")
    api = await _client(tenant_client)
    accepted = await api.upload([("stream.txt", _text("osprey"))])
    run_id = _run_id(accepted)
    await api.wait(run_id, timeout_s=120, poll_s=0.25)

    async def collect(last_event_id: str | None = None) -> list[StreamEvent]:
        return [e async for e in api.events(run_id, last_event_id=last_event_id)]

    events = await asyncio.wait_for(collect(), timeout=30)
    assert events[-1].event == "run" and events[-1].data["status"] == "completed"
    assert {e.event for e in events[:-1]} <= {"document"} and len(events) >= 2
    # Resuming after an event replays only what came after it.
    resumed = await asyncio.wait_for(collect(events[0].id), timeout=30)
    assert [e.id for e in resumed] == [e.id for e in events[1:]]


# --- what a healthy API does not do on demand -----------------------------------------------


def _scripted(answers: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return answers.pop(0)

    return httpx.MockTransport(handle)


RUN = {
    "run_id": "r1",
    "workflow_id": "index-run/r1",
    "status": "completed",
    "source": "database",
    "document_count": 0,
    "completed": 0,
    "failed": 0,
    "cancelled": 0,
    "running": 0,
    "created_at": "2026-01-01T00:00:00Z",
    "documents": [],
}


def test_429_is_retried_after_retry_after_a_bounded_number_of_times() -> None:
    seen: list[httpx.Request] = []
    slow = httpx.Response(429, headers={"Retry-After": "0.3"}, json={"detail": "slow down"})
    answers = [slow, httpx.Response(200, json=RUN)]
    with Client(transport=_scripted(answers, seen)) as api:
        started = time.monotonic()
        assert api.get_run("r1").run_id == "r1"
        assert time.monotonic() - started >= 0.3 and len(seen) == 2

    # An upload is sent whole again, its progress starting over.
    seen.clear()
    progress: list[tuple[int, int]] = []
    answers = [
        httpx.Response(429, headers={"Retry-After": "0"}, json={"detail": "too many runs"}),
        httpx.Response(
            202,
            json={"run_id": "r1", "workflow_id": "w", "documents": [], "status_url": "/x"},
        ),
    ]
    with Client(transport=_scripted(answers, seen)) as api:
        api.upload([("a.txt", b"abc" * 1000)], progress=lambda s, t: progress.append((s, t)))
    assert all(b"abc" * 1000 in r.content for r in seen) and len(seen) == 2
    assert progress[-1] == (3000, 3000) and (3000, 3000) in progress[:-1]

    # Bounded: after max_retries, RateLimited with the last Retry-After; waits are capped.
    seen.clear()
    forever = [
        httpx.Response(429, headers={"Retry-After": "3600"}, json={"detail": "no"})
        for _ in range(3)
    ]
    with Client(transport=_scripted(forever, seen), max_retries=2, max_retry_wait_s=0.01) as api:
        with pytest.raises(RateLimited) as limited:
            api.get_run("r1")
    assert len(seen) == 3 and limited.value.retry_after_s == 3600.0
    assert limited.value.detail == "no"


async def test_async_errors_are_typed_and_not_retried() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(409, json={"detail": "refused", "evaluation": {"queries": 3}}),
        httpx.Response(503, text="upstream down"),
        httpx.Response(500, text="boom"),
    ]
    async with AsyncClient(transport=_scripted(answers, seen), api_key="dk_k") as api:
        with pytest.raises(Conflict) as refused:
            await api.promote_generation("g", eval_set="gold", min_recall_at_5=0.5)
        assert refused.value.body["evaluation"] == {"queries": 3}
        with pytest.raises(ApiError) as down:
            await api.get_run("r1")
        assert down.value.status == 503 and down.value.detail == "upstream down"
        with pytest.raises(ApiError) as boom:
            await api.get_run("r1")
        assert type(boom.value) is ApiError and boom.value.status == 500
    assert len(seen) == 3 and all(r.headers["authorization"] == "Bearer dk_k" for r in seen)
    assert json.loads(seen[0].content) == {"require": {"eval_set": "gold", "min_recall_at_5": 0.5}}


class _Broken(httpx.SyncByteStream):
    """A stream that sends some bytes, then the connection breaks."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection reset")


def test_events_resume_after_the_last_event_seen_when_the_connection_breaks() -> None:
    seen: list[httpx.Request] = []
    first = (
        b": keep-alive\n\n"
        b'event: document\nid: 1\ndata: {"document_id": "d1", "status": "running",\n'
        b'data:  "step": "parse"}\n\n'
        b'event: document\nid: 2\ndata: {"document_id": "d1", "status": "completed"}\n\n'
        b'event: document\nid: 3\ndata: {"docu'  # cut mid-event: not delivered
    )
    rest = (
        b'event: document\nid: 3\ndata: {"document_id": "d2", "status": "failed"}\n\n'
        b'event: run\nid: 4\ndata: {"status": "completed_with_errors"}\n\n'
    )
    answers = [
        httpx.Response(200, stream=_Broken(first), headers={"content-type": "text/event-stream"}),
        httpx.Response(200, content=rest, headers={"content-type": "text/event-stream"}),
    ]
    with Client(transport=_scripted_stream(answers, seen)) as api:
        events = list(api.events("r1"))
    assert [(e.event, e.id) for e in events] == [
        ("document", "1"),
        ("document", "2"),
        ("document", "3"),
        ("run", "4"),
    ]
    assert events[0].data == {"document_id": "d1", "status": "running", "step": "parse"}
    assert "last-event-id" not in seen[0].headers
    assert seen[1].headers["last-event-id"] == "2"
    assert seen[1].url.path == "/v1/runs/r1/events"


def _scripted_stream(
    answers: list[httpx.Response], seen: list[httpx.Request]
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return httpx.MockTransport(handle)


def test_cursors_name_their_list_and_survive_the_round_trip() -> None:
    when = datetime.now(UTC) - timedelta(microseconds=1)
    position = Position(when, str(uuid.uuid4()))
    assert Position.from_cursor("documents", position.cursor("documents")) == position
    for bad in ("", "!!", position.cursor("runs")):
        with pytest.raises(ValueError):
            Position.from_cursor("documents", bad)


# --- the CLI, through the client --------------------------------------------------------------


async def test_cli_commands_talk_through_the_client(
    api_app: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The CLI's commands against the API served over a real socket (the CLI's client is
    synchronous; the app is the session's, served by uvicorn on this event loop)."""
    import uvicorn
    from rich.console import Console
    from typer.testing import CliRunner

    from cli import main as cli_main
    from docindex.auth import create_api_key

    key = await create_api_key(api_app.state.resources.pool, f"t-{uuid.uuid4().hex[:10]}")
    server = uvicorn.Server(
        uvicorn.Config(api_app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn has no event to await)
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        monkeypatch.setattr(
            cli_main,
            "_client",
            lambda timeout=60.0: Client(f"http://127.0.0.1:{port}", key, timeout=timeout),
        )
        monkeypatch.setattr(cli_main, "console", Console(width=300))

        async def docindex(*args: str) -> tuple[int, str]:
            result = await asyncio.to_thread(CliRunner().invoke, cli_main.app, list(args))
            return result.exit_code, result.output

        word = f"quokkanite{uuid.uuid4().hex[:6]}"
        path = tmp_path / "field-notes.txt"
        path.write_text(f"The {word} sample was logged at the ridge.\n" * 20)
        code, out = await docindex("ingest", str(path), "--wait")
        assert code == 0 and "completed 1 · failed 0" in out, out
        run_id = out.split("run ", 1)[1].split(":", 1)[0].strip()
        code, out = await docindex("ingest", str(path))
        assert code == 0 and "already uploaded as document" in out, out

        code, out = await docindex("runs", "list")
        assert code == 0 and run_id in out and "completed" in out, out
        code, out = await docindex("documents", "list", "--filename", "FIELD-*.txt")
        assert code == 0 and "field-notes.txt" in out and run_id in out, out
        code, out = await docindex("documents", "list", "--status", "failed")
        assert code == 0 and "field-notes.txt" not in out, out
        code, out = await docindex("status", run_id)
        assert code == 0 and f"run {run_id}: completed" in out, out
        code, out = await docindex("search", word, "--mode", "keyword")
        assert code == 0 and "1. field-notes.txt" in out, out
        code, out = await docindex("retry", run_id)
        assert code == 0 and f"retrying 0 documents of {run_id}" in out, out
        code, out = await docindex("generations", "list")
        assert code == 0 and "active" in out, out
        # An error answer: its status and body, exit 1, as before the client.
        code, out = await docindex("cancel", run_id)
        assert code == 1 and "409" in out and "already completed" in out, out
        code, out = await docindex("status", str(uuid.uuid4()))
        assert code == 1 and "404" in out and "no such run" in out, out
    finally:
        server.should_exit = True
        await serving
