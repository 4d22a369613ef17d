"""Prometheus metrics of the API process. Worker metrics are served by each worker."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

router = APIRouter(tags=["health"])

REQUESTS = Counter(
    "docindex_api_requests", "HTTP requests by route template", ["method", "route", "status"]
)
LATENCY = Histogram(
    "docindex_api_request_seconds", "HTTP request latency by route template", ["method", "route"]
)
UPLOADS = Counter("docindex_uploads", "Upload requests accepted")
DOCUMENTS_ACCEPTED = Counter("docindex_documents_accepted", "Documents accepted for indexing")
UPLOAD_BYTES = Counter("docindex_upload_bytes", "Bytes of documents accepted")
SEARCH_SECONDS = Histogram("docindex_search_seconds", "Search latency, query embedding included")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class Measure:
    """Counts every answer and its latency by route template. A plain ASGI middleware: the
    request's body streams past it untouched (a ``BaseHTTPMiddleware`` would relay every
    chunk of an upload through a stream of its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        # The route template ("/v1/runs/{run_id}"), never the raw path: bounded label values.
        template = getattr(scope.get("route"), "path", "unmatched")
        REQUESTS.labels(scope["method"], template, str(status)).inc()
        LATENCY.labels(scope["method"], template).observe(time.perf_counter() - started)
