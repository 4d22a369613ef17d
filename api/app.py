"""FastAPI application factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

from docindex import __version__
from docindex.blobstore import BlobStore
from docindex.config import Settings, get_settings
from docindex.database import create_pool
from docindex.runs import resume_orphaned_runs
from docindex.search_attributes import ensure_registered
from docindex.telemetry import setup_tracing
from docindex.temporal_client import connect

from .deps import Resources
from .routes import documents, health, metrics, retries, runs, search

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
        )
        app.state.resources = resources
        await ensure_registered(resources.temporal, settings.temporal_namespace)
        # Load the query embedder now, in the background, so the first search is fast.
        resources.load_embedder()
        reconciler = asyncio.create_task(_resume_orphaned_runs_forever(resources))
        try:
            yield
        finally:
            reconciler.cancel()
            await pool.close()

    app = FastAPI(
        title="docindex",
        version=__version__,
        summary="Durable document indexing for RAG on Temporal",
        lifespan=lifespan,
    )
    for module in (documents, runs, retries, search, health, metrics):
        app.include_router(module.router)
    app.middleware("http")(metrics.measure)
    setup_tracing("docindex-api")
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    return app
