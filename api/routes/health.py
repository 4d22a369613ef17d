"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from fastapi import APIRouter, Response, status

from ..deps import ResourcesDep

router = APIRouter(tags=["health"])
CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it says nothing about what it depends on)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(res: ResourcesDep, response: Response) -> dict[str, object]:
    """Temporal, Postgres and the blob store are reachable; 503 with details if not."""
    checks = await asyncio.gather(
        _check("temporal", res.temporal.service_client.check_health()),
        _check("postgres", res.pool.fetchval("SELECT 1")),
        _check("blob_store", res.blobs.exists("readyz-probe")),
    )
    ready = all(c["ok"] for c in checks)
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"status": "ready" if ready else "not ready", "checks": {c["name"]: c for c in checks}}


async def _check(name: str, probe: Awaitable[object]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means not ready; say which and why
        return {"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"name": name, "ok": True, "latency_ms": round((time.perf_counter() - started) * 1e3, 1)}
