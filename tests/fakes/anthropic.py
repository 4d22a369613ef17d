"""A fake Anthropic Messages API, for driving the real ``anthropic`` SDK in tests.

Endpoints: ``POST /v1/messages`` (JSON, or SSE when ``stream`` is true),
``POST /v1/messages/count_tokens``, and the Message Batches API (``/v1/messages/batches``:
create, list, retrieve, cancel, delete, ``/results`` as JSONL). ``base_url`` is the bare origin:
the SDK adds ``/v1/...`` itself.

The key is accepted as ``x-api-key`` (what the API documents) or ``Authorization: Bearer``
(what anthropic 2.x sends for ``api_key=``); ``anthropic-version`` must be present. Errors are
``{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}`` and the SDK maps
them by status (401 AuthenticationError, 429 RateLimitError, 500 InternalServerError,
529 OverloadedError, ...).

Prompt caching is modelled as the API describes it: the prompt is tools, then system, then
messages; a block with ``cache_control`` ends a cacheable prefix. A request whose prefix up to a
breakpoint was written before (same model, identical blocks) reads it, and writes the prefixes
up to its later breakpoints. ``usage.input_tokens`` counts only what is neither read nor written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .server import FakeServer, Incoming, Reply, count_tokens, truncate_tokens

DEFAULT_API_KEY = "anthropic-test-key"
Responder = Callable[[dict[str, Any]], str | list[dict[str, Any]]]
"""Given the request JSON, the reply: text, or a list of content blocks (e.g. ``tool_use``)."""

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_MAX_BREAKPOINTS = 4
_CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_WORD_RE = re.compile(r"[A-Za-z][\w'-]{3,}")


class ResponderError(Exception):
    """Raise from a responder to answer with an API error instead of a message.

    A plain ``/v1/messages`` call gets the error as its HTTP response; in a batch, the request
    becomes an ``errored`` result.
    """

    def __init__(self, message: str, status: int = 400, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type or _ERROR_TYPES.get(status, "api_error")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def last_user_text(request: dict[str, Any]) -> str:
    """The text of the last user turn of a Messages request (for writing responders)."""
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _topic_words(request: dict[str, Any], n: int = 5) -> list[str]:
    words = dict.fromkeys(w.lower() for w in _WORD_RE.findall(last_user_text(request)))
    return list(words)[:n]


def default_responder(request: dict[str, Any]) -> str:
    """A short sentence naming up to five words of the last user message: deterministic, and
    enough for a test to see that the answer belongs to the question."""
    words = _topic_words(request)
    return f"Fake answer about {', '.join(words)}." if words else "Fake answer."


@dataclass(frozen=True)
class _Segment:
    """One cacheable unit of the prompt (a tool, a system block, a message block)."""

    key: bytes
    tokens: int
    ttl: str | None  # set when the block carries cache_control


@dataclass(frozen=True)
class CacheUse:
    read: int = 0
    created_5m: int = 0
    created_1h: int = 0

    @property
    def created(self) -> int:
        return self.created_5m + self.created_1h


@dataclass
class _Batch:
    id: str
    created_at: datetime
    results: list[dict[str, Any]]
    polls_left: int
    status: str = "in_progress"
    ended_at: datetime | None = None
    cancel_initiated_at: datetime | None = None


@dataclass
class _Usage:
    input_tokens: int
    cache: CacheUse = field(default_factory=CacheUse)


class _Invalid(Exception):
    """A 400 invalid_request_error from request validation."""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class FakeAnthropic(FakeServer):
    """Fake Anthropic API.

    ``responder`` makes the answer text (default: ``default_responder``). ``min_cache_tokens``
    is the shortest prefix that gets cached (the real API's minimum is 1024-4096 tokens by
    model; 0 here so small test prompts cache). ``batch_polls_before_end`` is how many
    ``retrieve`` calls see a new batch ``in_progress`` before it ends.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        responder: Responder | None = None,
        min_cache_tokens: int = 0,
        batch_polls_before_end: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.responder: Responder = responder or default_responder
        self.min_cache_tokens = min_cache_tokens
        self.batch_polls_before_end = batch_polls_before_end
        self._cache: dict[str, tuple[float, str]] = {}  # prefix hash -> (expires, ttl)
        self._batches: dict[str, _Batch] = {}
        self._serial = 0

    # -- test helpers ----------------------------------------------------------------------

    def clear_cache(self) -> None:
        """Forget every cached prefix, as if the TTLs had run out."""
        with self._lock:
            self._cache.clear()

    @property
    def cache_size(self) -> int:
        with self._lock:
            return len(self._cache)

    def end_batch(self, batch_id: str) -> None:
        """Finish a batch now, whatever ``batch_polls_before_end`` said."""
        with self._lock:
            self._finish(self._batches[batch_id])

    @property
    def batch_ids(self) -> list[str]:
        with self._lock:
            return list(self._batches)

    # -- wire format -----------------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        with self._lock:
            self._serial += 1
            return f"{prefix}_fake{self._serial:020d}"

    def _json(self, status: int, obj: Any) -> Reply:
        return Reply(status, json.dumps(obj).encode(), {"request-id": self._next("req")})

    def _error(self, status: int, message: str, error_type: str | None = None) -> Reply:
        request_id = self._next("req")
        body = {
            "type": "error",
            "error": {
                "type": error_type or _ERROR_TYPES.get(status, "api_error"),
                "message": message,
            },
            "request_id": request_id,
        }
        return Reply(status, json.dumps(body).encode(), {"request-id": request_id})

    def _precheck(self, incoming: Incoming) -> Reply | None:
        key = incoming.headers.get("x-api-key")
        auth = incoming.headers.get("authorization", "")
        if key is None and auth.startswith("Bearer "):
            key = auth.removeprefix("Bearer ")
        if key is None:
            return self._error(401, "x-api-key header is required")
        if key != self.api_key:
            return self._error(401, "invalid x-api-key")
        if not incoming.headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required")
        return None

    def _route(self, incoming: Incoming, body: Any) -> Reply:
        method, path = incoming.method, incoming.path
        try:
            if path == "/v1/messages" and method == "POST":
                return self._messages(body)
            if path == "/v1/messages/count_tokens" and method == "POST":
                self._validate(body, need_max_tokens=False)
                return self._json(200, {"input_tokens": self._input_tokens(body)})
            if path == "/v1/messages/batches":
                if method == "POST":
                    return self._create_batch(body)
                if method == "GET":
                    return self._list_batches()
            match = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results|/cancel)?", path)
            if match:
                return self._batch_endpoint(method, match.group(1), match.group(2))
        except _Invalid as exc:
            return self._error(400, str(exc))
        return self._error(404, f"Not found: {method} {path}")

    # -- /v1/messages ----------------------------------------------------------------------

    def _messages(self, body: Any) -> Reply:
        try:
            message = self._create_message(body, service_tier="standard")
        except ResponderError as exc:
            return self._error(exc.status, str(exc), exc.error_type)
        if body.get("stream"):
            return Reply(200, _sse(message), {"request-id": self._next("req")}, "text/event-stream")
        return self._json(200, message)

    def _validate(self, body: Any, *, need_max_tokens: bool = True) -> None:
        if not isinstance(body, dict):
            raise _Invalid("The request body must be a JSON object.")
        required = ("model", "max_tokens", "messages") if need_max_tokens else ("model", "messages")
        for name in required:
            if name not in body:
                raise _Invalid(f"{name}: Field required")
        if not isinstance(body["model"], str) or not body["model"]:
            raise _Invalid("model: Input should be a valid string")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            raise _Invalid("messages: at least one message is required")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise _Invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            if not isinstance(message.get("content"), (str, list)):
                raise _Invalid(f"messages.{i}.content: Field required")
        if need_max_tokens:
            max_tokens = body["max_tokens"]
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise _Invalid("max_tokens: Input should be greater than or equal to 1")
            thinking = body.get("thinking")
            if isinstance(thinking, dict) and thinking.get("type") == "enabled":
                budget = thinking.get("budget_tokens")
                if not isinstance(budget, int) or budget < 1024:
                    raise _Invalid(
                        "thinking.enabled.budget_tokens: Input should be greater than or equal "
                        "to 1024"
                    )
                if max_tokens <= budget:
                    raise _Invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
        breakpoints = sum(1 for s in self._segments(body) if s.ttl)
        if breakpoints > _MAX_BREAKPOINTS:
            raise _Invalid(
                f"A maximum of {_MAX_BREAKPOINTS} blocks with cache_control may be provided. "
                f"Found {breakpoints}."
            )

    def _create_message(self, body: Any, *, service_tier: str) -> dict[str, Any]:
        """The Message for a request; raises _Invalid or ResponderError."""
        self._validate(body)
        produced = self.responder(body)
        blocks = [{"type": "text", "text": produced}] if isinstance(produced, str) else produced
        content, stop_reason, stop_sequence, output_tokens = self._shape_output(body, blocks)
        usage = self._use_cache(body)
        cache = usage.cache
        return {
            "id": self._next("msg"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": output_tokens,
                "cache_creation_input_tokens": cache.created,
                "cache_read_input_tokens": cache.read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": cache.created_5m,
                    "ephemeral_1h_input_tokens": cache.created_1h,
                },
                "service_tier": service_tier,
            },
        }

    def _shape_output(
        self, body: dict[str, Any], blocks: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], str, str | None, int]:
        """Thinking first, then the responder's blocks cut at a stop sequence or max_tokens."""
        content: list[dict[str, Any]] = []
        used = 0
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            words = _topic_words(body)
            text = f"The user asks about {', '.join(words) or 'something'}; answer briefly."
            used += count_tokens(text)  # billed even when the display omits it
            signature = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
            shown = "" if thinking.get("display") == "omitted" else text
            content.append({"type": "thinking", "thinking": shown, "signature": signature})
        budget = max(0, body["max_tokens"] - used)
        stops = [s for s in body.get("stop_sequences") or [] if isinstance(s, str) and s]
        stop_reason, stop_sequence = "end_turn", None
        for block in blocks:
            block = dict(block)
            if block.get("type") == "tool_use":
                block.setdefault("id", self._next("toolu"))
                block.setdefault("input", {})
                stop_reason = "tool_use"
            if block.get("type") == "text":
                text = block.get("text", "")
                hits = [(text.find(s), s) for s in stops if s in text]
                if hits:
                    at, stop_sequence = min(hits)
                    block["text"] = text[:at]
                tokens = count_tokens(block["text"])
                if tokens > budget:
                    block["text"] = truncate_tokens(block["text"], max(0, budget))
                    content.append(block)
                    return content, "max_tokens", None, used + max(0, budget)
                used += tokens
                budget -= tokens
                content.append(block)
                if hits:
                    return content, "stop_sequence", stop_sequence, used
                continue
            tokens = count_tokens(json.dumps(block.get("input", block)))
            used += tokens
            budget -= tokens
            content.append(block)
        return content, stop_reason, stop_sequence, used

    # -- prompt caching ----------------------------------------------------------------------

    @staticmethod
    def _segments(body: dict[str, Any]) -> list[_Segment]:
        def segment(where: str, block: Any) -> _Segment:
            ttl = None
            if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
                control = block["cache_control"]
                if control.get("type") != "ephemeral":
                    raise _Invalid("cache_control.type: Input should be 'ephemeral'")
                ttl = control.get("ttl") or "5m"
                if ttl not in _TTL_SECONDS:
                    raise _Invalid("cache_control.ttl: Input should be '5m' or '1h'")
                block = {k: v for k, v in block.items() if k != "cache_control"}
            if isinstance(block, dict) and block.get("type") == "text":
                tokens = count_tokens(str(block.get("text", "")))
            else:
                tokens = count_tokens(json.dumps(block))
            key = json.dumps([where, block], sort_keys=True).encode()
            return _Segment(key, tokens, ttl)

        segments = [segment("tool", t) for t in body.get("tools") or []]
        system = body.get("system")
        if isinstance(system, str) and system:
            segments.append(segment("system", {"type": "text", "text": system}))
        elif isinstance(system, list):
            segments += [segment("system", b) for b in system]
        for i, message in enumerate(body.get("messages") or []):
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
            where = f"{i}:{message.get('role')}"
            segments += [segment(where, b) for b in blocks or []]
        return segments

    def _input_tokens(self, body: dict[str, Any]) -> int:
        return sum(s.tokens for s in self._segments(body))

    def _use_cache(self, body: dict[str, Any]) -> _Usage:
        segments = self._segments(body)
        running = hashlib.sha256(body["model"].encode())
        prefixes: list[tuple[str, int, str | None]] = []  # (hash, tokens so far, ttl)
        total = 0
        for s in segments:
            running.update(len(s.key).to_bytes(8, "little") + s.key)
            total += s.tokens
            prefixes.append((running.hexdigest(), total, s.ttl))
        breakpoints = [k for k, p in enumerate(prefixes) if p[2]]
        if not breakpoints:
            return _Usage(total)
        now = time.monotonic()
        with self._lock:
            read_at, read = -1, 0
            # The longest prefix, up to the last breakpoint, that an earlier request wrote.
            for k in range(breakpoints[-1], -1, -1):
                entry = self._cache.get(prefixes[k][0])
                if entry is not None and entry[0] > now:
                    read_at, read = k, prefixes[k][1]
                    self._cache[prefixes[k][0]] = (now + _TTL_SECONDS[entry[1]], entry[1])
                    break
            created = {"5m": 0, "1h": 0}
            done = read
            for k in breakpoints:
                digest, tokens, ttl = prefixes[k]
                if k <= read_at or tokens < self.min_cache_tokens or ttl is None:
                    continue
                self._cache[digest] = (now + _TTL_SECONDS[ttl], ttl)
                created[ttl] += tokens - done
                done = tokens
        use = CacheUse(read=read, created_5m=created["5m"], created_1h=created["1h"])
        return _Usage(total - use.read - use.created, use)

    # -- Message Batches ---------------------------------------------------------------------

    def _create_batch(self, body: Any) -> Reply:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise _Invalid("requests: at least one request is required")
        if len(requests) > 100_000:
            raise _Invalid("requests: at most 100000 requests are allowed in a batch")
        seen: set[str] = set()
        for i, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID_RE.match(custom_id):
                raise _Invalid(f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if custom_id in seen:
                raise _Invalid(f"requests.{i}.custom_id: duplicate custom_id '{custom_id}'")
            seen.add(custom_id)
            if not isinstance(request.get("params"), dict):
                raise _Invalid(f"requests.{i}.params: Field required")
        results = [self._batch_result(r["custom_id"], r["params"]) for r in requests]
        batch = _Batch(
            self._next("msgbatch"), datetime.now(UTC), results, self.batch_polls_before_end
        )
        with self._lock:
            self._batches[batch.id] = batch
            return self._json(200, self._batch_json(batch))

    def _batch_result(self, custom_id: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            if params.get("stream"):
                raise _Invalid("stream: streaming is not supported in batches")
            message = self._create_message(params, service_tier="batch")
            return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
        except (_Invalid, ResponderError) as exc:
            status = exc.status if isinstance(exc, ResponderError) else 400
            error_type = exc.error_type if isinstance(exc, ResponderError) else None
            error = json.loads(self._error(status, str(exc), error_type).body)
            return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}

    def _finish(self, batch: _Batch) -> None:
        if batch.status == "ended":
            return
        if batch.status == "canceling":
            batch.results = [
                {"custom_id": r["custom_id"], "result": {"type": "canceled"}} for r in batch.results
            ]
        batch.status, batch.ended_at = "ended", datetime.now(UTC)

    def _batch_json(self, batch: _Batch) -> dict[str, Any]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if batch.status == "ended":
            for r in batch.results:
                counts[r["result"]["type"]] += 1
        else:
            counts["processing"] = len(batch.results)
        ended = batch.status == "ended"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.status,
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + timedelta(hours=24)),
            "ended_at": _iso(batch.ended_at),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "results_url": (
                f"{self.root_url}/v1/messages/batches/{batch.id}/results" if ended else None
            ),
        }

    def _list_batches(self) -> Reply:
        with self._lock:
            data = [self._batch_json(b) for b in reversed(self._batches.values())]
        return self._json(
            200,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    def _batch_endpoint(self, method: str, batch_id: str, action: str | None) -> Reply:
        with self._lock:
            batch = self._batches.get(batch_id)
            if batch is None:
                return self._error(404, f"No message batch with id {batch_id}")
            if action is None and method == "GET":
                # Polling is what moves a batch along, so a test controls how long it "runs".
                if batch.status != "ended":
                    if batch.polls_left > 0 and batch.status == "in_progress":
                        batch.polls_left -= 1
                    else:
                        self._finish(batch)
                return self._json(200, self._batch_json(batch))
            if action is None and method == "DELETE":
                if batch.status != "ended":
                    raise _Invalid("A batch must end before it can be deleted.")
                del self._batches[batch_id]
                return self._json(200, {"id": batch_id, "type": "message_batch_deleted"})
            if action == "/cancel" and method == "POST":
                if batch.status == "in_progress":
                    batch.status, batch.cancel_initiated_at = "canceling", datetime.now(UTC)
                return self._json(200, self._batch_json(batch))
            if action == "/results" and method == "GET":
                if batch.status != "ended":
                    raise _Invalid(f"Message batch {batch_id} is still processing.")
                lines = "".join(json.dumps(r) + "\n" for r in batch.results)
                return Reply(
                    200, lines.encode(), {"request-id": self._next("req")}, "application/x-jsonl"
                )
        return self._error(404, f"Not found: {method} {batch_id}{action or ''}")


def _sse(message: dict[str, Any]) -> bytes:
    """The Message as the event stream a ``stream: true`` request gets."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for i, block in enumerate(message["content"]):
        kind = block.get("type")
        if kind == "text":
            empty: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"]}]
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        else:
            empty, deltas = block, []
        events.append({"type": "content_block_start", "index": i, "content_block": empty})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message["stop_reason"],
                "stop_sequence": message["stop_sequence"],
            },
            "usage": {
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
            },
        }
    )
    events.append({"type": "message_stop"})
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


__all__ = [
    "DEFAULT_API_KEY",
    "CacheUse",
    "FakeAnthropic",
    "Responder",
    "ResponderError",
    "default_responder",
    "last_user_text",
]
