"""Shared plumbing for the fake provider APIs: an HTTP server in a background thread.

The stdlib ``ThreadingHTTPServer`` is enough: the fakes answer from memory, each request gets
its own thread, and no event loop is involved, so a fake can serve async and sync SDK clients
alike (and Temporal workers in other threads) without sharing a loop with the test.

A subclass supplies the provider's wire format: ``_precheck`` (auth, version headers),
``_route`` (the endpoints) and ``_error`` (the provider's error JSON). This module does the
rest: recording requests, injecting faults, adding latency.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

# Words cut into pieces of at most 8 characters, and each punctuation mark: a crude stand-in for
# a subword tokenizer, but deterministic, fast and easy to predict in a test.
_TOKEN_RE = re.compile(r"\w{1,8}|[^\w\s]")

# Headers that carry credentials: recorded as present, never with their value.
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization"})
REDACTED = "<redacted>"


def token_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each token, so a text can be cut after its first n tokens."""
    return [m.span() for m in _TOKEN_RE.finditer(text)]


def count_tokens(text: str) -> int:
    """The fakes' token count for ``text``: words in pieces of <= 8 characters, plus punctuation.

    English prose comes to roughly one token per 5-6 characters, under a len/3 estimate.
    """
    return sum(1 for _ in _TOKEN_RE.finditer(text))


def truncate_tokens(text: str, limit: int) -> str:
    """``text`` cut after its first ``limit`` tokens."""
    spans = token_spans(text)
    if len(spans) <= limit:
        return text
    return text[: spans[limit - 1][1]] if limit > 0 else ""


@dataclass(frozen=True)
class Incoming:
    """One HTTP request as the handler thread read it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    raw_body: bytes


@dataclass(frozen=True)
class RecordedRequest:
    """What a test can assert on: every request a fake received, in arrival order."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased; credentials redacted ("Bearer <redacted>")
    body: Any  # the parsed JSON body, or None when there was none (or it was not JSON)
    received_at: float  # time.time() when the request arrived
    status: int  # the status the fake answered with


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(obj).encode(), dict(headers or {}))


@dataclass(frozen=True)
class Fault:
    """An error answer queued by ``fail_next``, served instead of the real handling."""

    status: int
    retry_after: float | None = None
    message: str | None = None
    path: str | None = None  # only requests to this path take it; None: any request


def format_retry_after(seconds: float) -> str:
    # Retry-After is integer seconds by the HTTP spec; a fractional value is kept as given
    # because both SDKs parse it with float()/int() and tests may want sub-second waits.
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # keep-alive connections must not keep the test process alive
    allow_reuse_address = True
    # The default backlog of 5 makes a burst of concurrent clients wait out SYN retries.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe behind: expected, quiet.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so the SDKs' pooled connections are kept alive as with the real services;
    # every reply therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        incoming = Incoming(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            raw_body=raw,
        )
        reply = self.server.fake._handle(incoming)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the requests are recorded on the fake; stderr noise helps nobody


class FakeServer:
    """A fake HTTP API on 127.0.0.1 in a background thread.

    Use as a context manager (``with FakeVoyage() as fake:``) or call ``start()``/``stop()``.
    State is guarded by one lock, so tests, SDK clients and worker threads may share a fake.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.RLock()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._requests: list[RecordedRequest] = []
        self._faults: deque[Fault] = deque()
        self.latency_s: float = 0.0
        """Seconds every answer waits before it is sent (to exercise client timeouts)."""
        self.internal_errors: list[str] = []
        """Tracebacks of bugs in the fake itself (answered as 500); tests may assert empty."""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._http is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._http = _HTTPServer(self._address, self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        http, thread = self._http, self._thread
        self._http = self._thread = None
        if http is not None:
            http.shutdown()
            http.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self if self._http is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        return int(self._http.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>`` with no path."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass to the SDK as ``base_url``; providers differ on whether it has /v1."""
        return self.root_url

    # -- assertions --------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self._requests
                if r.path == path and (method is None or r.method == method.upper())
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- fault injection ---------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        *,
        retry_after: float | None = None,
        message: str | None = None,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` authenticated requests (to ``path``, if given) with ``status``.

        ``retry_after`` adds a ``Retry-After`` header (seconds). Faults queue in call order,
        so ``fail_next(1, 429); fail_next(1, 500)`` gives a 429 then a 500. A request that
        fails authentication does not use up a fault, as a real API checks the key first.
        """
        with self._lock:
            self._faults.extend(Fault(status, retry_after, message, path) for _ in range(n))

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.path is None or fault.path == path:
                    self._faults.remove(fault)
                    return fault
        return None

    # -- request handling --------------------------------------------------------------------

    def _handle(self, incoming: Incoming) -> Reply:
        received_at = time.time()
        body: Any = None
        bad_json = False
        if incoming.raw_body:
            try:
                body = json.loads(incoming.raw_body)
            except ValueError:
                bad_json = True
        try:
            reply = self._precheck(incoming)
            if reply is None and (fault := self._take_fault(incoming.path)) is not None:
                reply = self._fault_reply(fault)
            if reply is None and bad_json:
                reply = self._error(400, "The request body is not valid JSON.")
            if reply is None:
                reply = self._route(incoming, body)
        except Exception:
            # A bug in the fake must not hang the client; it answers 500 and is kept for tests.
            with self._lock:
                self.internal_errors.append(traceback.format_exc())
            reply = self._error(500, "Internal error in the fake server.")
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        headers = {k: _redact(k, v) for k, v in incoming.headers.items()}
        record = RecordedRequest(
            incoming.method, incoming.path, incoming.query, headers, body, received_at, reply.status
        )
        with self._lock:
            self._requests.append(record)
        return reply

    def _fault_reply(self, fault: Fault) -> Reply:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = format_retry_after(fault.retry_after)
        reply = self._error(fault.status, fault.message or _default_fault_message(fault.status))
        return Reply(reply.status, reply.body, {**reply.headers, **headers}, reply.content_type)

    # -- provider hooks ----------------------------------------------------------------------

    def _precheck(self, incoming: Incoming) -> Reply | None:
        """An error reply when the request must be refused before anything else (auth)."""
        return None

    def _route(self, incoming: Incoming, body: Any) -> Reply:
        raise NotImplementedError

    def _error(self, status: int, message: str) -> Reply:
        """The provider's error JSON for ``status``."""
        return json_reply(status, {"error": message})


def _redact(name: str, value: str) -> str:
    # The scheme stays visible ("Bearer <redacted>") so a test can tell how the SDK sent its key.
    if name not in _SECRET_HEADERS:
        return value
    scheme, _, secret = value.partition(" ")
    return f"{scheme} {REDACTED}" if secret else REDACTED


def _default_fault_message(status: int) -> str:
    if status == 429:
        return "Rate limit exceeded (injected by the fake)."
    if status == 529:
        return "Overloaded (injected by the fake)."
    if status >= 500:
        return "Internal server error (injected by the fake)."
    return f"Error {status} (injected by the fake)."
