"""FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from docindex import __version__
from docindex.auth import KeyVerifier
from docindex.blobstore import BlobStore
from docindex.config import Settings, get_settings
from docindex.database import create_pool
from docindex.ratelimit import RateLimiter
from docindex.search_attributes import ensure_registered
from docindex.telemetry import setup_tracing
from docindex.temporal_client import connect
from workflows.starter import resume_orphaned_runs

from .body_limit import BodyLimits
from .deps import Resources, authenticate
from .events import EventHub
from .key_gate import KeyGate
from .routes import (
    documents,
    events,
    generations,
    health,
    metrics,
    retries,
    runs,
    search,
    sources,
    webhooks,
)
from .schemas import problems

log = logging.getLogger(__name__)
RECONCILE_EVERY_S = 30.0


async def _resume_orphaned_runs_forever(resources: Resources) -> None:
    while True:
        try:
            await resume_orphaned_runs(resources.pool, resources.temporal, resources.settings)
        except Exception:  # keep trying: Temporal or Postgres may be briefly away
            log.exception("could not resume orphaned runs")
        await asyncio.sleep(RECONCILE_EVERY_S)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.database_url is None:
            raise RuntimeError("DOCINDEX_DATABASE_URL is required (docindex dev sets it)")
        pool = await create_pool(settings.database_url)
        resources = Resources(
            settings=settings,
            pool=pool,
            blobs=BlobStore.from_settings(settings),
            temporal=await connect(settings),
            keys=KeyVerifier(pool),
            limiter=RateLimiter(settings.rate_limit, settings.rate_limit_storage),
            bad_keys=RateLimiter(settings.bad_key_rate_limit, settings.rate_limit_storage),
        )
        app.state.resources = resources
        await ensure_registered(resources.temporal, settings.temporal_namespace)
        # Load the query embedder now, in the background, so the first search is fast.
        resources.load_embedder()
        reconciler = asyncio.create_task(_resume_orphaned_runs_forever(resources))
        # One LISTEN connection fans run events out to this process's SSE streams.
        app.state.event_hub = EventHub(settings.database_url)
        await app.state.event_hub.start()
        try:
            yield
        finally:
            reconciler.cancel()
            await app.state.event_hub.close()
            await pool.close()

    app = FastAPI(
        title="docindex",
        version=__version__,
        summary="Durable document indexing for RAG on Temporal",
        lifespan=lifespan,
    )
    # Everything a tenant owns needs its key; health and metrics are for the platform.
    for router in (
        documents.router,
        runs.router,
        events.router,
        retries.router,
        search.router,
        generations.router,
        generations.eval_sets,
        sources.router,
        webhooks.router,
    ):
        app.include_router(
            router,
            dependencies=[Depends(authenticate)],
            responses=problems(401, 429, 503),
        )
    for module in (health, metrics):
        app.include_router(module.router)
    # Postgres down, restarting or out of connections: the request would succeed later, so
    # answer 503 with Retry-After (clients and load balancers retry), not a 500 stack trace.
    # OSError and TimeoutError count only when raised from asyncpg (connect, pool acquire):
    # a missing blob is a different problem.
    import traceback

    import asyncpg
    from fastapi import Request
    from fastapi.responses import JSONResponse

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        frames = traceback.extract_tb(exc.__traceback__)
        if isinstance(exc, OSError | TimeoutError) and not any(
            "asyncpg" in f.filename for f in frames
        ):
            raise exc
        log.warning("database unavailable for %s: %r", request.url.path, exc)
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    for exc_type in (
        asyncpg.PostgresConnectionError,  # class 08: connection lost or refused
        asyncpg.exceptions.OperatorInterventionError,  # 57P: shutting down, starting up
        asyncpg.exceptions.TooManyConnectionsError,
        OSError,
        TimeoutError,
    ):
        app.add_exception_handler(exc_type, database_unavailable)
    # The last added runs first: metrics count every answer, the key is checked before any
    # body byte is read, and bodies are then held to their limits as they stream in.
    app.add_middleware(BodyLimits, settings=settings, upload_paths={documents.router.prefix})
    app.add_middleware(KeyGate, resources=lambda: app.state.resources)
    app.add_middleware(metrics.Measure)
    setup_tracing("docindex-api")
    # One span per request, none per chunk of its body or answer (an upload's body comes
    # in dozens of them).
    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="healthz,readyz", exclude_spans=["receive", "send"]
    )
    return app
