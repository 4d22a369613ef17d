"""Refuse request bodies over their limits, or too slow, while they stream in.

Nothing waits for a body to be kept before judging it: a declared ``Content-Length`` over
the limit is refused before one byte is read; a body that grows past it (chunked, or lying
about its length) is cut off the moment it does (413); an upload's file parts are followed
as they stream, so one file over the per-file limit stops the request at that byte, not
after the whole request was spooled; and a body not all in by its deadline gets 408, so a
client trickling bytes in cannot hold a connection and a worker's memory.

Upload routes (multipart) get the upload limits; every other route takes a small JSON body.
The API key was checked before any of this (``api/key_gate.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docindex.config import Settings

from .services.uploads import clean_filename


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
        files = _FileSizes.of(headers.get(b"content-type"), s.max_upload_bytes) if upload else None
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
                elif files is not None and (name := files.feed(chunk)) is not None:
                    refusal = _Refusal(
                        413, f"{name}: the file exceeds the limit of {s.max_upload_bytes} bytes"
                    )
                if refusal is not None:
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


class _FileSizes:
    """Follows a multipart body as it streams in, to say which file part, if any, has grown
    past the per-file limit. It only counts: the app's own parser keeps the parts."""

    def __init__(self, boundary: bytes, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._field = b""
        self._value = b""
        self._disposition = b""
        self._over: str | None = None
        self._parser: MultipartParser | None = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_part_data": self._data,
            },
        )

    @classmethod
    def of(cls, content_type: bytes | None, max_bytes: int) -> _FileSizes | None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            return None  # not an upload the route will accept; its parser says why
        return cls(boundary, max_bytes)

    def feed(self, chunk: bytes) -> str | None:
        """The name of the file now over the limit, else None."""
        if self._parser is not None and chunk:
            try:
                self._parser.write(chunk)
            except MultipartParseError:
                self._parser = None  # malformed: the app's parser refuses it (400)
        return self._over

    def _begin(self) -> None:
        self._size, self._disposition = 0, b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field, self._value = b"", b""

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._over is None and self._size > self._max_bytes:
            _, options = parse_options_header(self._disposition)
            filename = options.get(b"filename")
            if filename is not None:  # form fields have the framework's own limit
                self._over = clean_filename(filename.decode("utf-8", "replace"))


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
