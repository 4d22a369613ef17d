"""Hostile input is contained at the door (issue #17): the key is checked before any body
byte is read, bodies are held to their limits and deadlines while they stream in, bad keys
are rate limited per address, and uploads are judged (format, quotas) before one byte is
stored. Every request is real HTTP against the app, over the session's Postgres and Temporal.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from docindex.config import Settings
from docindex.repository import keys

from .helpers import app_with

BOUNDARY = "hostile"
CHUNK = 16 * 1024


def keyless(app: Any, address: str = "127.0.0.1", **headers: str) -> httpx.AsyncClient:
    """A client of ``app`` from ``address``, with these headers and no key of its own."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 4321)),
        base_url="http://docindex",
        headers=headers,
    )


class Body:
    """A request body that counts the bytes the server pulled from it."""

    def __init__(
        self, head: bytes = b"", total: int | None = None, pause_s: float = 0.0, piece: int = CHUNK
    ) -> None:
        self.head, self.total, self.pause_s, self.piece = head, total, pause_s, piece
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            self.sent += len(self.head)
            yield self.head
        while self.total is None or self.sent < self.total:  # None: it never ends
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
            self.sent += self.piece
            yield b"z" * self.piece


def file_part(filename: str) -> bytes:
    """The start of a multipart file part whose content follows."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="{filename}"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def files_in(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.fixture
def blob_dir(tmp_path: Path) -> Path:
    """A blob store of the test's own: what it holds is what the test's uploads stored."""
    return tmp_path / "blobs"


async def test_without_a_valid_key_no_body_is_read(settings: Settings, client: Client) -> None:
    async with app_with(settings, client) as (app, _):
        bad_key = f"dk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
        for headers in ({}, {"Authorization": f"Bearer {bad_key}"}):
            async with keyless(app, **headers) as http:
                # An endless search body, and one declaring 120 MB: 401, nothing read.
                endless = Body()
                response = await http.post("/v1/search", content=endless)
                assert response.status_code == 401, response.text
                assert response.headers["www-authenticate"] == "Bearer"
                assert endless.sent == 0
                declared = Body(total=120 * 1024 * 1024)
                response = await http.post(
                    "/v1/search",
                    content=declared,
                    headers={"Content-Length": str(120 * 1024 * 1024)},
                )
                assert (response.status_code, declared.sent) == (401, 0)
                # An endless upload: the same.
                upload = Body(head=file_part("endless.txt"))
                response = await http.post("/v1/documents", content=upload, headers=MULTIPART)
                assert (response.status_code, upload.sent) == (401, 0)
                # A body that would not even parse is still answered for its missing key.
                response = await http.post(
                    "/v1/search", content=b"{bad", headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 401, response.text
        # Probes and metrics need no key, whatever is sent.
        async with keyless(app) as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await http.get(path)).status_code == 200, path


async def test_json_bodies_are_capped_while_they_stream(settings: Settings, client: Client) -> None:
    async with app_with(settings, client) as (app, http):
        assert app.state.resources.settings.max_json_bytes == 64 * 1024  # the default
        query = {"query": "x" * 70 * 1024}
        response = await http.post("/v1/search", json=query)
        assert response.status_code == 413, response.text
        assert "65536 bytes" in response.json()["detail"]
        # No Content-Length: cut off once past the limit, not read to its end.
        endless = Body(head=b'{"query": "')
        response = await http.post(
            "/v1/search", content=endless, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert endless.sent <= 64 * 1024 + 2 * CHUNK
        # Under the limit, a malformed body is the route's to judge once the key is good.
        response = await http.post(
            "/v1/search", content=b"{bad", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert (await http.post("/v1/search", json={"query": "fine"})).status_code == 200


async def test_an_upload_stops_the_moment_a_file_passes_its_limit(
    settings: Settings, client: Client, blob_dir: Path
) -> None:
    async with app_with(
        settings,
        client,
        max_upload_bytes=100_000,
        max_request_bytes=1024**3,
        blob_url=blob_dir.as_uri(),
    ) as (_, http):
        # A 10 MB file in a request the request limit allows: stopped near 100 kB.
        big = Body(head=file_part("big.txt"), total=10 * 1024 * 1024)
        response = await http.post("/v1/documents", content=big, headers=MULTIPART)
        assert response.status_code == 413, response.text
        assert response.json()["detail"].startswith("big.txt: the file exceeds the limit")
        assert big.sent <= 100_000 + 2 * CHUNK
        # The same when a small file comes first: it is the big one that is named.
        small = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
            'filename="small.txt"\r\n\r\nsmall\r\n'
        ).encode()
        second = Body(head=small + file_part("second.txt"), total=10 * 1024 * 1024)
        response = await http.post("/v1/documents", content=second, headers=MULTIPART)
        assert response.status_code == 413
        assert "second.txt" in response.json()["detail"]
        assert second.sent <= 100_000 + 2 * CHUNK + len(small)
    assert files_in(blob_dir) == []


async def test_an_upload_part_with_endless_headers_is_cut_off(
    settings: Settings, client: Client, blob_dir: Path
) -> None:
    """The upload route parses its own body: a part whose header never ends (a file name
    of megabytes) is refused once it passes the parser's 4 KiB a header line, not held in
    memory to the request's limit."""
    async with app_with(
        settings, client, max_request_bytes=1024**3, blob_url=blob_dir.as_uri()
    ) as (_, http):
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="'
        endless = Body(head=head.encode(), total=50 * 1024 * 1024)
        response = await http.post("/v1/documents", content=endless, headers=MULTIPART)
        assert response.status_code == 400, response.text
        assert "header size exceeded" in response.json()["detail"]
        assert endless.sent <= 4 * 1024 + 2 * CHUNK + len(head)
    assert files_in(blob_dir) == []


async def test_a_trickling_body_gets_408(settings: Settings, client: Client) -> None:
    async with app_with(settings, client, body_timeout_s=0.5, upload_timeout_s=1.0) as (_, http):
        started = time.monotonic()
        trickle = Body(head=b'{"query": "', pause_s=0.2, piece=1)
        response = await http.post(
            "/v1/search", content=trickle, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 408, response.text
        assert "0.5 s" in response.json()["detail"]
        assert time.monotonic() - started < 3
        # An upload has its own, longer deadline.
        started = time.monotonic()
        upload = Body(head=file_part("slow.txt"), pause_s=0.2, piece=1)
        response = await http.post("/v1/documents", content=upload, headers=MULTIPART)
        assert response.status_code == 408, response.text
        assert 1.0 <= time.monotonic() - started < 4
        # A body that arrives in time is not affected.
        assert (await http.post("/v1/search", json={"query": "in time"})).status_code == 200


async def test_bad_keys_are_rate_limited_per_address_and_cost_no_query_twice(
    settings: Settings, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[bytes] = []
    real_lookup = keys.active_key

    async def counted(db: Any, key_hash: bytes) -> Any:
        lookups.append(key_hash)
        return await real_lookup(db, key_hash)

    monkeypatch.setattr(keys, "active_key", counted)

    def invented() -> str:
        return f"dk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"

    async with app_with(settings, client, bad_key_rate_limit="5/minute") as (app, good):
        # The good key is looked up (and known) before its address runs out of bad keys.
        assert (await good.post("/v1/search", json={"query": "q"})).status_code == 200
        statuses = []
        async with keyless(app, address="10.0.0.7") as http:
            for _ in range(20):
                response = await http.post(
                    "/v1/search",
                    json={"query": "q"},
                    headers={"Authorization": f"Bearer {invented()}"},
                )
                statuses.append(response.status_code)
            assert statuses == [401] * 5 + [429] * 15
            assert 1 <= int(response.headers["retry-after"]) <= 60
            assert "unknown or revoked API keys from this address" in response.json()["detail"]
            # Past its budget, an address's keys are not looked up at all...
            assert len(lookups) == 1 + 5
            # ...but a key already known still works from it.
            known = good.headers["authorization"]
            response = await http.post(
                "/v1/search", json={"query": "q"}, headers={"Authorization": known}
            )
            assert response.status_code == 200
        # Another address is not held back, and an invented key presented again is answered
        # from memory: one query, however often it comes.
        again = invented()
        async with keyless(app, address="10.0.0.8", Authorization=f"Bearer {again}") as http:
            for _ in range(3):
                assert (await http.post("/v1/search", json={"query": "q"})).status_code == 401
        assert len(lookups) == 1 + 5 + 1
        # A key of a shape never issued costs no query either.
        async with keyless(app, address="10.0.0.9", Authorization="Bearer dk_nope") as http:
            assert (await http.get("/v1/runs")).status_code == 401
        assert len(lookups) == 1 + 5 + 1


async def test_unknown_formats_get_415_and_are_never_stored(
    settings: Settings, client: Client, blob_dir: Path
) -> None:
    refused = {
        "blob.pdf": bytes(range(256)) * 8,  # no known format, whatever its name says
        "old.doc": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1000,  # legacy Office
        "latin1.txt": "caf\xe9 cr\xe8me ".encode("latin-1") * 100,  # text, not UTF-8
        # Text first, an executable after the sniffed head.
        "polyglot.txt": b"harmless words\n" * 1000 + b"\x7fELF\x02\x01\x01" + b"\x00" * 64,
    }
    async with app_with(
        settings,
        client,
        blob_url=blob_dir.as_uri(),
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
    ) as (_, http):
        for name, data in refused.items():
            response = await http.post("/v1/documents", files={"files": (name, data)})
            assert response.status_code == 415, (name, response.text)
            assert response.json()["detail"].startswith(f"{name}: ")
        assert files_in(blob_dir) == []
        # What is accepted: a PDF, Office, UTF-8 text (CSV is text).
        csv = f"id,name\n1,{uuid.uuid4()}\n".encode()
        response = await http.post("/v1/documents", files={"files": ("table.csv", csv)})
        assert response.status_code == 202, response.text
        await client.get_workflow_handle(response.json()["workflow_id"]).terminate("test over")


async def test_quotas_are_checked_before_anything_is_stored(
    settings: Settings, client: Client, blob_dir: Path
) -> None:
    def text(size: int) -> bytes:
        return (f"{uuid.uuid4()} " * size).encode()[:size]

    async with app_with(
        settings,
        client,
        blob_url=blob_dir.as_uri(),
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
        tenant_max_stored_bytes=5_000,
        tenant_max_documents_in_flight=3,
    ) as (_, http):
        first = text(3_000)
        accepted = await http.post("/v1/documents", files={"files": ("first.txt", first)})
        assert accepted.status_code == 202, accepted.text
        held = files_in(blob_dir)
        assert len(held) == 1

        # Over the stored-bytes quota: 413, said plainly, and not one byte written.
        response = await http.post("/v1/documents", files={"files": ("more.txt", text(2_500))})
        assert response.status_code == 413, response.text
        assert "storage quota of 5000 bytes" in response.json()["detail"]
        assert files_in(blob_dir) == held
        # Bytes the tenant holds already add nothing to it.
        again = await http.post("/v1/documents", files={"files": ("again.txt", first)})
        assert again.status_code == 200 and again.json()["documents"][0]["duplicate"]

        # Over the documents in flight: 1 queued + 3 new > 3.
        many = [("files", (f"{i}.txt", text(100))) for i in range(3)]
        response = await http.post("/v1/documents", files=many)
        assert response.status_code == 429, response.text
        assert response.headers["retry-after"] == "30"
        assert "documents queued or running" in response.json()["detail"]
        assert files_in(blob_dir) == held
        await client.get_workflow_handle(accepted.json()["workflow_id"]).terminate("test over")


async def test_readiness_names_the_failed_dependency_and_shows_why_only_to_a_key(
    settings: Settings, client: Client
) -> None:
    async with app_with(settings, client) as (app, http):
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["failed"] == []
        assert (await http.get(f"/v1/runs/{uuid.uuid4()}")).status_code == 404  # key known
        # Postgres goes away (its pool closed under the app).
        await app.state.resources.pool.close()
        async with keyless(app) as anonymous:
            down = await anonymous.get("/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["failed"] == ["postgres"]
        assert body["checks"]["postgres"] == {"name": "postgres", "ok": False}
        assert body["checks"]["temporal"]["ok"] and body["checks"]["blob_store"]["ok"]
        assert "error" not in down.text
        # The key was checked a moment ago: its holder may see why.
        detailed = (await http.get("/readyz")).json()
        assert detailed["failed"] == ["postgres"]
        assert detailed["checks"]["postgres"]["error"].startswith("InterfaceError")
