"""Signed webhooks, delivered by Temporal: a receiver checks each signature and gets every
event, in order per document, even when it is down at first. Real API, workers and HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.client import Client

from docindex.config import Settings
from docindex.webhooks import check_url, post

from .conftest import TenantClient
from .helpers import app_with, free_port, serve, wait_for_run

EVENTS = ["document.completed", "document.failed", "run.completed"]


class Receiver:
    """A webhook endpoint: keeps each delivery whose signature it could verify."""

    def __init__(self, secret: str = "") -> None:
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        header = dict(p.split("=", 1) for p in request.headers["docindex-signature"].split(","))
        expected = hmac.new(
            self.secret.encode(), f"{header['t']}.".encode() + body, hashlib.sha256
        ).hexdigest()
        if (
            not hmac.compare_digest(expected, header["v1"])
            or abs(time.time() - int(header["t"])) > 300
        ):
            return Response(status_code=400)
        event = json.loads(body)
        assert request.headers["docindex-delivery"] == event["id"]
        self.received.append(event)
        return Response(status_code=204)


async def until(check: Any, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


def texts(n: int) -> list[tuple[str, bytes]]:
    return [
        (f"hook-{i}.txt", f"Ledger {i} {uuid.uuid4()}: the tide tables.\n".encode() * 30)
        for i in range(n)
    ]


async def test_a_receiver_down_at_first_gets_every_event_signed_and_in_order(
    api_app: Any, tenant_client: TenantClient
) -> None:
    api, other = await tenant_client(), await tenant_client()
    port = free_port()
    created = await api.post(
        "/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/hook", "events": EVENTS}
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["secret"].startswith("whsec_") and sorted(hook["events"]) == EVENTS
    assert "secret" not in (await api.get(f"/v1/webhooks/{hook['webhook_id']}")).json()

    # Nobody listens yet: the run ends while its deliveries are being retried.
    upload = await api.post(
        "/v1/documents", files=[*[("files", f) for f in texts(2)], ("files", ("blank.txt", b" \n"))]
    )
    assert upload.status_code == 202, upload.text
    run_id = upload.json()["run_id"]
    assert (await wait_for_run(api, run_id))["status"] == "completed_with_errors"

    async def deliveries() -> list[dict[str, Any]]:
        response = await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries")
        assert response.status_code == 200, response.text
        return response.json()["deliveries"]

    first: list[dict[str, Any]] = []

    async def tried() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            first[:] = await deliveries()
            if first and first[0]["attempts"] >= 2:
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the first delivery was not retried: {first}")

    await tried()
    assert first[0]["status"] == "pending" and first[0]["last_error"]
    assert len(first) == 4  # two completed, one failed, the run

    receiver = Receiver(hook["secret"])
    async with serve(receiver.app, port=port):
        await until(lambda: len(receiver.received) == 4, 60)
    types = [e["type"] for e in receiver.received]
    assert sorted(types[:3]) == ["document.completed", "document.completed", "document.failed"]
    assert types[3] == "run.completed"
    run = receiver.received[3]["data"]
    assert (run["run_id"], run["completed"], run["failed"]) == (run_id, 2, 1)
    failed = next(e["data"] for e in receiver.received if e["type"] == "document.failed")
    assert failed["filename"] == "blank.txt" and failed["error_type"]
    # Sent in the order of the run's events.
    ids = [e["data"] for e in receiver.received]
    assert [d["run_id"] for d in ids] == [run_id] * 4

    shown = await deliveries()
    assert [d["status"] for d in shown] == ["delivered"] * 4
    assert shown[0]["attempts"] >= 2 and shown[0]["last_status_code"] == 204
    assert [d["delivery_id"] for d in shown] == [e["id"] for e in receiver.received]
    assert [d["event_id"] for d in shown] == sorted(d["event_id"] for d in shown)

    # Another tenant reaches none of it; deleting it stops it.
    for method, path in (
        ("GET", f"/v1/webhooks/{hook['webhook_id']}"),
        ("GET", f"/v1/webhooks/{hook['webhook_id']}/deliveries"),
        ("DELETE", f"/v1/webhooks/{hook['webhook_id']}"),
    ):
        assert (await other.request(method, path)).status_code == 404, path
    assert (await other.get("/v1/webhooks")).json() == []
    assert (await api.delete(f"/v1/webhooks/{hook['webhook_id']}")).status_code == 204
    assert (await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries")).status_code == 404


async def test_events_of_one_document_arrive_in_order_while_the_receiver_is_up(
    api_app: Any, tenant_client: TenantClient
) -> None:
    api = await tenant_client()
    receiver = Receiver()
    async with serve(receiver.app) as base_url:
        created = await api.post(
            "/v1/webhooks", json={"url": f"{base_url}/hook", "events": ["document.completed"]}
        )
        receiver.secret = created.json()["secret"]
        upload = await api.post("/v1/documents", files=[("files", f) for f in texts(3)])
        run_id = upload.json()["run_id"]
        await wait_for_run(api, run_id)
        await until(lambda: len(receiver.received) == 3, 30)
        # Only what it subscribed to.
        assert {e["type"] for e in receiver.received} == {"document.completed"}
        # Retried: a document completes again and is sent again, after its first event.
        doc = receiver.received[0]["data"]["document_id"]
        retry = await api.post(f"/v1/documents/{doc}/reindex")
        assert retry.status_code == 200, retry.text
        await until(lambda: len(receiver.received) == 4, 60)
        assert receiver.received[3]["data"]["document_id"] == doc


async def test_webhook_urls_must_be_http_and_public(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(settings, client, webhook_allow_private_urls=False) as (_, http):
        for url in (
            "ftp://example.com/hook",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://127.0.0.1:8080/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:192.168.0.1]/hook",
            "https://user:pw@example.com/hook",
        ):
            response = await http.post("/v1/webhooks", json={"url": url, "events": EVENTS})
            assert response.status_code == 422, (url, response.text)
        bad_event = await http.post(
            "/v1/webhooks", json={"url": "https://example.com/h", "events": ["document.x"]}
        )
        assert bad_event.status_code == 422
        ok = await http.post(
            "/v1/webhooks", json={"url": "https://example.com/h", "events": EVENTS}
        )
        assert ok.status_code == 201, ok.text
        assert (await http.delete(f"/v1/webhooks/{ok.json()['webhook_id']}")).status_code == 204
    check_url("http://127.0.0.1/hook", allow_private=True)


async def test_a_delivery_refuses_a_name_that_resolves_to_a_private_address() -> None:
    # This machine's own name resolves to one of its (private or loopback) addresses.
    answer = await post(
        f"http://{socket.gethostname()}:9/hook",
        "secret",
        b"{}",
        delivery_id="d",
        event_type="run.completed",
        timeout_s=1,
        allow_private=False,
    )
    assert not answer.delivered and answer.status_code is None
    assert answer.error and "not a public address" in answer.error
