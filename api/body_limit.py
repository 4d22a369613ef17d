"""Refuse request bodies over their limits, or too slow, while they stream in.

Nothing waits for a body to be kept before judging it: a declared ``Content-Length`` over
the limit is refused before one byte is read; a body that grows past it (chunked, or lying
about its length) is cut off the moment it does (413); and a body not all in by its
deadline gets 408, so a client trickling bytes in cannot hold a connection and a worker's
memory. An upload's route reads its own body as it streams and stops at the byte where one
file passes the per-file limit (api/services/incoming.py).

Upload routes (multipart) get the upload limits; every other route takes a small JSON body.
The API key was checked before any of this (``api/key_gate.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docindex.config import Settings


class _Refusal(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class BodyLimits:
    def __init__(self, app: ASGIApp, settings: Settings, upload_paths: Collection[str]) -> None:
        self.app = app
        self.settings = settings
        self.upload_paths = frozenset(upload_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        s = self.settings
        headers = dict(scope["headers"])
        upload = scope["path"] in self.upload_paths
        limit = s.max_request_bytes if upload else s.max_json_bytes
        timeout_s = s.upload_timeout_s if upload else s.body_timeout_s
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, _over(limit))
            return
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        received = 0
        complete = False
        refusal: _Refusal | None = None
        response_started = False

        async def guarded_receive() -> Message:
            nonlocal deadline, received, complete, refusal
            if refusal is not None:  # the app asks again after its read was refused
                raise refusal
            if complete:  # what follows the body (a disconnect) has no deadline
                return await receive()
            # The clock starts when the app first asks for the body, after routing and auth.
            deadline = deadline or loop.time() + timeout_s
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                refusal = _Refusal(408, f"the request body did not arrive within {timeout_s:g} s")
                raise refusal from None
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                complete = not message.get("more_body", False)
                if received > limit:
                    refusal = _over(limit)
                    raise refusal
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # The framework turns our interruption into a 400 "could not parse the body";
            # the caller is owed the real reason instead.
            if refusal is not None:
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not response_started:
            await _refuse(send, refusal)


def _over(limit: int) -> _Refusal:
    return _Refusal(413, f"the request body exceeds the limit of {limit} bytes")


async def _refuse(send: Send, refusal: _Refusal) -> None:
    body = json.dumps({"detail": refusal.detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refusal.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is never read: the connection cannot be reused.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
