"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from fastapi import APIRouter, Request, Response, status

from ..deps import Resources, ResourcesDep
from ..key_gate import bearer_token

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it says nothing about what it depends on)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request, res: ResourcesDep, response: Response) -> dict[str, object]:
    """Temporal, Postgres and the blob store are reachable; 503 naming those that are not.

    Anyone may ask (probes carry no key), so why a check failed (an exception's text: hosts,
    paths, driver messages) is shown only to a caller with a valid key, and logged."""
    checks = await asyncio.gather(
        _check("temporal", res.temporal.service_client.check_health()),
        _check("postgres", res.pool.fetchval("SELECT 1")),
        _check("blob_store", res.blobs.exists("readyz-probe")),
    )
    failed = [c["name"] for c in checks if not c["ok"]]
    if failed:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        for c in checks:
            if not c["ok"]:
                log.warning("not ready: %s: %s", c["name"], c["error"])
        if not await _has_valid_key(request, res, ask_postgres="postgres" not in failed):
            for c in checks:
                c.pop("error", None)
    return {
        "status": "not ready" if failed else "ready",
        "failed": failed,
        "checks": {c["name"]: c for c in checks},
    }


async def _has_valid_key(request: Request, res: Resources, ask_postgres: bool) -> bool:
    token = bearer_token(request.scope)
    if token is None:
        return False
    # A key looked up a moment ago is known without Postgres, which may be what failed.
    if res.keys.cached(token) is not None:
        return True
    try:
        return ask_postgres and await res.keys.verify(token) is not None
    except Exception:  # Postgres went away meanwhile: the key cannot be vouched for
        return False


async def _check(name: str, probe: Awaitable[object]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe, CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure means not ready; say which and why
        return {"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"name": name, "ok": True, "latency_ms": round((time.perf_counter() - started) * 1e3, 1)}
