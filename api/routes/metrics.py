"""Prometheus metrics of the API process. Worker metrics are served by each worker."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

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


async def measure(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    # The route template ("/v1/runs/{run_id}"), never the raw path: bounded label values.
    template = getattr(route, "path", "unmatched")
    REQUESTS.labels(request.method, template, str(response.status_code)).inc()
    LATENCY.labels(request.method, template).observe(time.perf_counter() - started)
    return response
