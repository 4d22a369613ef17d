"""A Python client of the docindex HTTP API, sync (``Client``) and async (``AsyncClient``).

Answers are parsed into the API's own models (``docindex.api_models``), so a client and the
server it talks to share one definition of every body::

    from docindex.client import Client

    with Client("http://localhost:8000", api_key="dk_...") as docindex:
        run = docindex.upload(["a.pdf", "b.docx"]).run_id
        print(docindex.wait(run).status)
        for hit in docindex.search("joint sealant", top_k=3).results:
            print(hit.filename, hit.pages, hit.score)

Errors are ``ApiError`` (``status``, ``detail``), by status a subclass (``NotFound``,
``Conflict``, ``RateLimited``...). A 429 is retried after its ``Retry-After``, a bounded
number of times, before it is raised; nothing else is retried, so a call is never made
twice behind the caller's back unless the server said it did nothing.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import io
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from docindex.api_models import (
    BulkRetryAccepted,
    DocumentDetail,
    DocumentItem,
    DocumentPage,
    GenerationAccepted,
    GenerationDetail,
    GenerationList,
    PromoteResult,
    RetryAccepted,
    RunItem,
    RunPage,
    RunStatus,
    SearchResponse,
    UploadAccepted,
)
from docindex.models import DocStatus, RunState

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthError",
    "Client",
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "StreamEvent",
    "Unavailable",
    "UploadFile",
]

T = TypeVar("T")

# What upload takes per file: a path, or a (file name, bytes) pair.
UploadFile = str | os.PathLike[str] | tuple[str, bytes]
# Called as the files' bytes are sent: (bytes sent so far, bytes in all).
Progress = Callable[[int, int], None]

TERMINAL_RUN = frozenset(
    {
        RunState.COMPLETED,
        RunState.COMPLETED_WITH_ERRORS,
        RunState.FAILED,
        RunState.CANCELLED,
        RunState.TERMINATED,
    }
)


# --- errors ---------------------------------------------------------------------------------


class ApiError(Exception):
    """The API answered with an error status: ``detail`` is what it said (its JSON
    ``detail``, else the body's text), ``body`` the whole JSON answer when there is one."""

    def __init__(
        self, status: int, detail: Any, *, body: Any = None, text: str = "", headers: Any = None
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.body = body
        self.text = text
        self.headers: Mapping[str, str] = headers or {}


class AuthError(ApiError):
    """401: no API key, or an unknown or revoked one."""


class NotFound(ApiError):
    """404: no such run, document or generation for this tenant."""


class Conflict(ApiError):
    """409: not possible in the current state (``body`` may say more, e.g. a refused
    promotion's ``evaluation``)."""


class InvalidRequest(ApiError):
    """422: a parameter or body the API does not accept (``detail`` names it)."""


class RateLimited(ApiError):
    """429 after the retries allowed; ``retry_after_s`` is the API's last Retry-After."""

    @property
    def retry_after_s(self) -> float | None:
        return _retry_after(self.headers)


class Unavailable(ApiError):
    """503: a backing service is unavailable; retry later."""


_ERRORS: dict[int, type[ApiError]] = {
    401: AuthError,
    404: NotFound,
    409: Conflict,
    422: InvalidRequest,
    429: RateLimited,
    503: Unavailable,
}


def _error(response: httpx.Response) -> ApiError:
    text = response.text
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    detail = body.get("detail", body) if isinstance(body, dict) else (body or text)
    cls = _ERRORS.get(response.status_code, ApiError)
    return cls(response.status_code, detail, body=body, text=text, headers=response.headers)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds: a number of seconds, or an HTTP date."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- requests, shared by the sync and async clients ------------------------------------------


@dataclass
class _Call(Generic[T]):
    """One API call: what to send and how to read its answer."""

    method: str
    url: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    json: Any = None
    files: Sequence[UploadFile] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    progress: Progress | None = None


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


def _model(model: type[T]) -> Callable[[httpx.Response], T]:
    adapter: TypeAdapter[T] = _adapter(model)
    return lambda response: adapter.validate_json(response.content)


def _json(response: httpx.Response) -> dict[str, Any]:
    return dict(response.json())


def _nothing(response: httpx.Response) -> None:
    return None


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters, without the unset ones, as the API spells them."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            value = value.isoformat()
        out[name] = str(value)
    return out


def _spec(part: BaseModel | Mapping[str, Any] | None) -> Any:
    return part.model_dump(mode="json") if isinstance(part, BaseModel) else part


class _Calls:
    """Every call of the API, built once for both clients."""

    @staticmethod
    def upload(
        files: Sequence[UploadFile],
        password: str | None,
        idempotency_key: str | None,
        progress: Progress | None,
    ) -> _Call[UploadAccepted]:
        if not files:
            raise ValueError("upload needs at least one file")
        return _Call(
            "POST",
            "/v1/documents",
            _model(UploadAccepted),
            files=files,
            data={"password": password} if password is not None else None,
            headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
            progress=progress,
        )

    @staticmethod
    def get_run(run_id: str) -> _Call[RunStatus]:
        return _Call("GET", f"/v1/runs/{run_id}", _model(RunStatus))

    @staticmethod
    def get_document(document_id: str) -> _Call[DocumentDetail]:
        return _Call("GET", f"/v1/documents/{document_id}", _model(DocumentDetail))

    @staticmethod
    def list_documents(
        status: DocStatus | str | None,
        run_id: str | None,
        filename: str | None,
        created_after: datetime | None,
        limit: int | None,
        cursor: str | None,
    ) -> _Call[DocumentPage]:
        params = _params(
            status=status,
            run_id=run_id,
            filename=filename,
            created_after=created_after,
            limit=limit,
            cursor=cursor,
        )
        return _Call("GET", "/v1/documents", _model(DocumentPage), params=params)

    @staticmethod
    def list_runs(
        status: RunState | str | None, limit: int | None, cursor: str | None
    ) -> _Call[RunPage]:
        params = _params(status=status, limit=limit, cursor=cursor)
        return _Call("GET", "/v1/runs", _model(RunPage), params=params)

    @staticmethod
    def search(
        query: str,
        top_k: int,
        mode: str,
        filename: str | None,
        document_ids: Sequence[str] | None,
        metadata: Mapping[str, Any] | None,
        generation_id: str | None,
    ) -> _Call[SearchResponse]:
        # Sent as given: the API validates (a malformed filter is an InvalidRequest).
        body: dict[str, Any] = {"query": query, "top_k": top_k, "mode": mode}
        optional = {
            "filename": filename,
            "document_ids": list(document_ids) if document_ids is not None else None,
            "metadata": dict(metadata) if metadata is not None else None,
            "generation_id": generation_id,
        }
        body |= {k: v for k, v in optional.items() if v is not None}
        return _Call("POST", "/v1/search", _model(SearchResponse), json=body)

    @staticmethod
    def retry(run_id: str, error_types: Sequence[str] | None) -> _Call[RetryAccepted]:
        body = {"error_types": list(error_types)} if error_types else {}
        return _Call("POST", f"/v1/runs/{run_id}/retry", _model(RetryAccepted), json=body)

    @staticmethod
    def retry_failures(error_type: str, since: datetime | str | None) -> _Call[BulkRetryAccepted]:
        when = since.isoformat() if isinstance(since, datetime) else since
        body = {"error_type": error_type, "since": when}
        return _Call("POST", "/v1/retries", _model(BulkRetryAccepted), json=body)

    @staticmethod
    def reindex(document_id: str) -> _Call[RetryAccepted]:
        return _Call("POST", f"/v1/documents/{document_id}/reindex", _model(RetryAccepted))

    @staticmethod
    def cancel(run_id: str) -> _Call[dict[str, Any]]:
        return _Call("POST", f"/v1/runs/{run_id}/cancel", _json)

    @staticmethod
    def cancel_document(document_id: str) -> _Call[dict[str, Any]]:
        return _Call("POST", f"/v1/documents/{document_id}/cancel", _json)

    @staticmethod
    def delete_run(run_id: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/runs/{run_id}", _nothing)

    @staticmethod
    def delete_document(document_id: str) -> _Call[None]:
        return _Call("DELETE", f"/v1/documents/{document_id}", _nothing)

    @staticmethod
    def create_generation(
        chunker: BaseModel | Mapping[str, Any] | None,
        embedder: BaseModel | Mapping[str, Any] | None,
        enricher: BaseModel | Mapping[str, Any] | None,
    ) -> _Call[GenerationAccepted]:
        parts = {"chunker": chunker, "embedder": embedder, "enricher": enricher}
        body = {k: _spec(v) for k, v in parts.items() if v is not None}
        return _Call("POST", "/v1/generations", _model(GenerationAccepted), json=body)

    @staticmethod
    def list_generations() -> _Call[list[GenerationDetail]]:
        read = _model(GenerationList)
        return _Call("GET", "/v1/generations", lambda r: read(r).generations)

    @staticmethod
    def get_generation(generation_id: str) -> _Call[GenerationDetail]:
        return _Call("GET", f"/v1/generations/{generation_id}", _model(GenerationDetail))

    @staticmethod
    def promote_generation(
        generation_id: str, eval_set: str | None, min_recall_at_5: float
    ) -> _Call[PromoteResult]:
        body = (
            {"require": {"eval_set": eval_set, "min_recall_at_5": min_recall_at_5}}
            if eval_set
            else {}
        )
        url = f"/v1/generations/{generation_id}/promote"
        return _Call("POST", url, _model(PromoteResult), json=body)

    @staticmethod
    def cancel_generation(generation_id: str) -> _Call[dict[str, Any]]:
        return _Call("POST", f"/v1/generations/{generation_id}/cancel", _json)


class _Counted:
    """A file being uploaded that reports the bytes read from it (httpx reads each file
    in chunks as it sends the body, so what was read is what was sent)."""

    def __init__(self, raw: IO[bytes], index: int, sent: list[int], report: Callable[[], None]):
        self._raw, self._index, self._sent, self._report = raw, index, sent, report

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        if chunk:
            self._sent[self._index] += len(chunk)
            self._report()
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if offset == 0 and whence == os.SEEK_SET:
            self._sent[self._index] = 0  # sent again from the start (a retried request)
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


class _OpenFiles:
    """The multipart ``files`` of one attempt of an upload, opened fresh, closed after."""

    def __init__(self, files: Sequence[UploadFile], progress: Progress | None) -> None:
        self._handles: list[IO[bytes]] = []
        self.parts: list[tuple[str, tuple[str, Any]]] = []
        sizes: list[int] = []
        try:
            for item in files:
                if isinstance(item, tuple):
                    name, content = item
                    handle: IO[bytes] = io.BytesIO(content)
                    sizes.append(len(content))
                else:
                    path = Path(item)
                    handle = path.open("rb")
                    name = path.name
                    sizes.append(os.fstat(handle.fileno()).st_size)
                self._handles.append(handle)
                self.parts.append(("files", (name, handle)))
        except BaseException:
            self.close()
            raise
        if progress is not None:
            total, sent = sum(sizes), [0] * len(sizes)

            def report() -> None:
                progress(sum(sent), total)

            self.parts = [
                ("files", (name, _Counted(h, i, sent, report)))
                for i, (_, (name, h)) in enumerate(self.parts)
            ]

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


@dataclass(frozen=True)
class StreamEvent:
    """One event of a run's stream (``GET /v1/runs/{id}/events``): ``event`` is
    ``document`` or ``run`` (the run's end, its last event), ``id`` what resumes after it,
    ``data`` its JSON."""

    event: str
    id: str | None
    data: Any


class _SseParser:
    """Server-sent events, line by line (the WHATWG format: ``event:``, ``id:``, ``data:``
    lines, a blank line ends an event, ``:`` lines are comments such as keep-alives)."""

    def __init__(self) -> None:
        self._event = "message"
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> StreamEvent | None:
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            raw = "\n".join(self._data)
            try:
                data: Any = json.loads(raw)
            except ValueError:
                data = raw
            event = StreamEvent(self._event, self._id, data)
            self._event, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def _is_last(event: StreamEvent) -> bool:
    """The run's event ends its stream."""
    return event.event == "run"


def _stream_headers(last_event_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers


def _reconnect_wait(attempt: int) -> float:
    return float(min(0.5 * 2 ** (attempt - 1), 10.0))


# A stream's reads wait as long as the run is quiet; only connecting is timed.
_STREAM_TIMEOUT = httpx.Timeout(30.0, read=None)


class _Base:
    def __init__(
        self,
        api_key: str | None,
        max_retries: int,
        max_retry_wait_s: float,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be at least 0")
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s

    def _wait_before_retry(self, response: httpx.Response, attempt: int) -> float | None:
        """How long to wait before trying again, or None to give up."""
        if response.status_code != 429 or attempt > self.max_retries:
            return None
        wait = _retry_after(response.headers)
        if wait is None:
            wait = _reconnect_wait(attempt)
        return min(wait, self.max_retry_wait_s)

    def _request_args(self, call: _Call[Any]) -> dict[str, Any]:
        return {
            "params": call.params,
            "json": call.json,
            "data": call.data,
            "headers": {**self._auth, **call.headers},
        }


# --- the clients --------------------------------------------------------------------------


class Client(_Base):
    """The docindex API, synchronously. Give it the API's ``base_url`` and a key, or an
    ``httpx.Client`` of your own (``http``, used as is: its base URL, timeouts and
    transport), or a ``transport`` (tests: ``httpx.MockTransport``)."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
        max_retries: int = 3,
        max_retry_wait_s: float = 60.0,
    ) -> None:
        super().__init__(api_key, max_retries, max_retry_wait_s)
        self._owned = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            files = _OpenFiles(call.files, call.progress) if call.files is not None else None
            try:
                response = self._http.request(
                    call.method,
                    call.url,
                    files=files.parts if files else None,
                    **self._request_args(call),
                )
            finally:
                if files:
                    files.close()
            if response.status_code < 400:
                return call.parse(response)
            wait = self._wait_before_retry(response, attempt)
            if wait is None:
                raise _error(response)
            time.sleep(wait)

    # runs and documents

    def upload(
        self,
        files: Sequence[UploadFile],
        *,
        password: str | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> UploadAccepted:
        """Upload files (paths, or ``(name, bytes)`` pairs) as one run. ``run_id`` is None
        when every file was a duplicate. ``progress(sent, total)`` is called as bytes go."""
        return self._send(_Calls.upload(files, password, idempotency_key, progress))

    def get_run(self, run_id: str) -> RunStatus:
        return self._send(_Calls.get_run(run_id))

    def wait(
        self,
        run_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_status: Callable[[RunStatus], None] | None = None,
    ) -> RunStatus:
        """Poll the run until it ends and return its last status (``on_status`` sees every
        one read); ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            run = self.get_run(run_id)
            if on_status is not None:
                on_status(run)
            if run.status in TERMINAL_RUN:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout_s} s")
            time.sleep(poll_s)

    def events(
        self, run_id: str, *, last_event_id: str | None = None, reconnects: int = 5
    ) -> Iterator[StreamEvent]:
        """The run's events as they happen, until its ``run`` event (its end). A broken
        connection is resumed after the last event seen (``Last-Event-ID``), up to
        ``reconnects`` times in a row."""
        failures = 0
        while True:
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/runs/{run_id}/events",
                    headers={**self._auth, **_stream_headers(last_event_id)},
                    timeout=_STREAM_TIMEOUT,
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise _error(response)
                    parser = _SseParser()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        last_event_id = event.id or last_event_id
                        yield event
                        if _is_last(event):
                            return
                return  # closed by the server: the run has ended
            except httpx.TransportError:
                failures += 1
                if failures > reconnects:
                    raise
                time.sleep(_reconnect_wait(failures))

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self._send(_Calls.cancel(run_id))

    def retry(self, run_id: str, error_types: Sequence[str] | None = None) -> RetryAccepted:
        """Index again the run's failed or cancelled documents (those of ``error_types``)."""
        return self._send(_Calls.retry(run_id, error_types))

    def retry_failures(
        self, error_type: str, since: datetime | str | None = None
    ) -> BulkRetryAccepted:
        """Retry every document of this tenant that failed with ``error_type``."""
        return self._send(_Calls.retry_failures(error_type, since))

    def delete_run(self, run_id: str) -> None:
        self._send(_Calls.delete_run(run_id))

    def get_document(self, document_id: str) -> DocumentDetail:
        return self._send(_Calls.get_document(document_id))

    def cancel_document(self, document_id: str) -> dict[str, Any]:
        return self._send(_Calls.cancel_document(document_id))

    def reindex(self, document_id: str) -> RetryAccepted:
        return self._send(_Calls.reindex(document_id))

    def delete_document(self, document_id: str) -> None:
        self._send(_Calls.delete_document(document_id))

    # lists

    def list_documents(
        self,
        *,
        status: DocStatus | str | None = None,
        run_id: str | None = None,
        filename: str | None = None,
        created_after: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DocumentPage:
        """One page of this tenant's documents, newest first."""
        return self._send(
            _Calls.list_documents(status, run_id, filename, created_after, limit, cursor)
        )

    def iter_documents(
        self,
        *,
        status: DocStatus | str | None = None,
        run_id: str | None = None,
        filename: str | None = None,
        created_after: datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[DocumentItem]:
        """Every document that matches, newest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = self.list_documents(
                status=status,
                run_id=run_id,
                filename=filename,
                created_after=created_after,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.documents
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def list_runs(
        self,
        *,
        status: RunState | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RunPage:
        """One page of this tenant's runs, newest first."""
        return self._send(_Calls.list_runs(status, limit, cursor))

    def iter_runs(
        self, *, status: RunState | str | None = None, page_size: int = 100
    ) -> Iterator[RunItem]:
        """Every run that matches, newest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = self.list_runs(status=status, limit=page_size, cursor=cursor)
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # search

    def search(
        self,
        query: str,
        *,
        top_k: int = 5,
        mode: str = "hybrid",
        filename: str | None = None,
        document_ids: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        generation_id: str | None = None,
    ) -> SearchResponse:
        return self._send(
            _Calls.search(query, top_k, mode, filename, document_ids, metadata, generation_id)
        )

    # generations

    def create_generation(
        self,
        *,
        chunker: BaseModel | Mapping[str, Any] | None = None,
        embedder: BaseModel | Mapping[str, Any] | None = None,
        enricher: BaseModel | Mapping[str, Any] | None = None,
    ) -> GenerationAccepted:
        """Build a new index generation; omitted parts are the active generation's."""
        return self._send(_Calls.create_generation(chunker, embedder, enricher))

    def list_generations(self) -> list[GenerationDetail]:
        return self._send(_Calls.list_generations())

    def get_generation(self, generation_id: str) -> GenerationDetail:
        return self._send(_Calls.get_generation(generation_id))

    def promote_generation(
        self, generation_id: str, *, eval_set: str | None = None, min_recall_at_5: float = 0.0
    ) -> PromoteResult:
        """Make it the generation search serves; with ``eval_set``, refused (``Conflict``,
        its ``body["evaluation"]`` the scores) when it scores worse or below the bar."""
        return self._send(_Calls.promote_generation(generation_id, eval_set, min_recall_at_5))

    def cancel_generation(self, generation_id: str) -> dict[str, Any]:
        return self._send(_Calls.cancel_generation(generation_id))


class AsyncClient(_Base):
    """The docindex API, for asyncio: the same methods as ``Client``, awaited. ``http`` may
    be an ``httpx.AsyncClient`` of your own; ``transport`` e.g. ``httpx.ASGITransport(app)``
    to talk to an app in-process."""

    def __init__(
        self,
        base_url: str = "http://localhost:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        max_retry_wait_s: float = 60.0,
    ) -> None:
        super().__init__(api_key, max_retries, max_retry_wait_s)
        self._owned = http is None
        self._http = http or httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            attempt += 1
            files = _OpenFiles(call.files, call.progress) if call.files is not None else None
            try:
                response = await self._http.request(
                    call.method,
                    call.url,
                    files=files.parts if files else None,
                    **self._request_args(call),
                )
            finally:
                if files:
                    files.close()
            if response.status_code < 400:
                return call.parse(response)
            wait = self._wait_before_retry(response, attempt)
            if wait is None:
                raise _error(response)
            await asyncio.sleep(wait)

    # runs and documents

    async def upload(
        self,
        files: Sequence[UploadFile],
        *,
        password: str | None = None,
        idempotency_key: str | None = None,
        progress: Progress | None = None,
    ) -> UploadAccepted:
        """Upload files (paths, or ``(name, bytes)`` pairs) as one run. ``run_id`` is None
        when every file was a duplicate. ``progress(sent, total)`` is called as bytes go."""
        return await self._send(_Calls.upload(files, password, idempotency_key, progress))

    async def get_run(self, run_id: str) -> RunStatus:
        return await self._send(_Calls.get_run(run_id))

    async def wait(
        self,
        run_id: str,
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_status: Callable[[RunStatus], None] | None = None,
    ) -> RunStatus:
        """Poll the run until it ends and return its last status (``on_status`` sees every
        one read); ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            run = await self.get_run(run_id)
            if on_status is not None:
                on_status(run)
            if run.status in TERMINAL_RUN:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} is still {run.status} after {timeout_s} s")
            await asyncio.sleep(poll_s)

    async def events(
        self, run_id: str, *, last_event_id: str | None = None, reconnects: int = 5
    ) -> AsyncIterator[StreamEvent]:
        """The run's events as they happen, until its ``run`` event (its end). A broken
        connection is resumed after the last event seen (``Last-Event-ID``), up to
        ``reconnects`` times in a row."""
        failures = 0
        while True:
            try:
                async with self._http.stream(
                    "GET",
                    f"/v1/runs/{run_id}/events",
                    headers={**self._auth, **_stream_headers(last_event_id)},
                    timeout=_STREAM_TIMEOUT,
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise _error(response)
                    parser = _SseParser()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        last_event_id = event.id or last_event_id
                        yield event
                        if _is_last(event):
                            return
                return  # closed by the server: the run has ended
            except httpx.TransportError:
                failures += 1
                if failures > reconnects:
                    raise
                await asyncio.sleep(_reconnect_wait(failures))

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._send(_Calls.cancel(run_id))

    async def retry(self, run_id: str, error_types: Sequence[str] | None = None) -> RetryAccepted:
        """Index again the run's failed or cancelled documents (those of ``error_types``)."""
        return await self._send(_Calls.retry(run_id, error_types))

    async def retry_failures(
        self, error_type: str, since: datetime | str | None = None
    ) -> BulkRetryAccepted:
        """Retry every document of this tenant that failed with ``error_type``."""
        return await self._send(_Calls.retry_failures(error_type, since))

    async def delete_run(self, run_id: str) -> None:
        await self._send(_Calls.delete_run(run_id))

    async def get_document(self, document_id: str) -> DocumentDetail:
        return await self._send(_Calls.get_document(document_id))

    async def cancel_document(self, document_id: str) -> dict[str, Any]:
        return await self._send(_Calls.cancel_document(document_id))

    async def reindex(self, document_id: str) -> RetryAccepted:
        return await self._send(_Calls.reindex(document_id))

    async def delete_document(self, document_id: str) -> None:
        await self._send(_Calls.delete_document(document_id))

    # lists

    async def list_documents(
        self,
        *,
        status: DocStatus | str | None = None,
        run_id: str | None = None,
        filename: str | None = None,
        created_after: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> DocumentPage:
        """One page of this tenant's documents, newest first."""
        return await self._send(
            _Calls.list_documents(status, run_id, filename, created_after, limit, cursor)
        )

    async def iter_documents(
        self,
        *,
        status: DocStatus | str | None = None,
        run_id: str | None = None,
        filename: str | None = None,
        created_after: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[DocumentItem]:
        """Every document that matches, newest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_documents(
                status=status,
                run_id=run_id,
                filename=filename,
                created_after=created_after,
                limit=page_size,
                cursor=cursor,
            )
            for document in page.documents:
                yield document
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def list_runs(
        self,
        *,
        status: RunState | str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RunPage:
        """One page of this tenant's runs, newest first."""
        return await self._send(_Calls.list_runs(status, limit, cursor))

    async def iter_runs(
        self, *, status: RunState | str | None = None, page_size: int = 100
    ) -> AsyncIterator[RunItem]:
        """Every run that matches, newest first, fetching page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_runs(status=status, limit=page_size, cursor=cursor)
            for run in page.runs:
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # search

    async def search(
        self,
        query: str,
        *,
        top_k: int = 5,
        mode: str = "hybrid",
        filename: str | None = None,
        document_ids: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        generation_id: str | None = None,
    ) -> SearchResponse:
        return await self._send(
            _Calls.search(query, top_k, mode, filename, document_ids, metadata, generation_id)
        )

    # generations

    async def create_generation(
        self,
        *,
        chunker: BaseModel | Mapping[str, Any] | None = None,
        embedder: BaseModel | Mapping[str, Any] | None = None,
        enricher: BaseModel | Mapping[str, Any] | None = None,
    ) -> GenerationAccepted:
        """Build a new index generation; omitted parts are the active generation's."""
        return await self._send(_Calls.create_generation(chunker, embedder, enricher))

    async def list_generations(self) -> list[GenerationDetail]:
        return await self._send(_Calls.list_generations())

    async def get_generation(self, generation_id: str) -> GenerationDetail:
        return await self._send(_Calls.get_generation(generation_id))

    async def promote_generation(
        self, generation_id: str, *, eval_set: str | None = None, min_recall_at_5: float = 0.0
    ) -> PromoteResult:
        """Make it the generation search serves; with ``eval_set``, refused (``Conflict``,
        its ``body["evaluation"]`` the scores) when it scores worse or below the bar."""
        return await self._send(_Calls.promote_generation(generation_id, eval_set, min_recall_at_5))

    async def cancel_generation(self, generation_id: str) -> dict[str, Any]:
        return await self._send(_Calls.cancel_generation(generation_id))
