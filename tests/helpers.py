"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client

from docindex.config import Settings

# Real documents shipped with the tests; tests/data/MANIFEST.tsv says where each comes from.
DATA = Path(__file__).resolve().parent / "data"

TERMINAL_RUN_STATES = {"completed", "completed_with_errors", "failed", "cancelled", "terminated"}


async def wait_for_run(
    http: httpx.AsyncClient,
    run_id: str,
    limit_s: float = 240.0,
    seen: list[dict[str, Any]] | None = None,
    poll_s: float = 0.25,
) -> dict[str, Any]:
    """Poll the run until it is terminal; every status read is appended to ``seen``."""
    deadline = time.monotonic() + limit_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await http.get(f"/v1/runs/{run_id}")
        response.raise_for_status()
        body = response.json()
        if seen is not None:
            seen.append(body)
        if body["status"] in TERMINAL_RUN_STATES:
            return body
        await asyncio.sleep(poll_s)
    raise AssertionError(f"run {run_id} did not finish in {limit_s}s: {body}")


async def chunk_rows(database_url: str, document_id: str) -> int:
    """Chunks stored for a document, read straight from Postgres."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM chunks WHERE document_id = $1", uuid.UUID(document_id)
        )
    finally:
        await conn.close()


def unique(data: bytes) -> bytes:
    """The same document with different bytes (a trailing PDF comment), so no earlier
    test's step artifacts, which are keyed by content, are reused."""
    return data + f"\n% test {uuid.uuid4()}\n".encode()


@contextlib.asynccontextmanager
async def app_with(
    settings: Settings, client: Client, *, tenant: str | None = None, **overrides: Any
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """An API with other limits, over the session's Temporal, Postgres and workers, with a
    key of ``tenant`` (a new tenant by default)."""
    overrides.setdefault("temporal_address", client.service_client.config.target_host)
    from api.app import create_app
    from docindex.auth import create_api_key

    app = create_app(settings.model_copy(update=overrides))
    async with app.router.lifespan_context(app):
        key = await create_api_key(app.state.resources.pool, tenant or f"t-{uuid.uuid4().hex[:10]}")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://docindex",
            headers={"Authorization": f"Bearer {key}"},
        ) as http:
            yield app, http


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a `docindex dev` of a test's own: its own state and free ports, and
    none of this process's DOCINDEX_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCINDEX_")}
    env.update(
        {
            "DOCINDEX_DATA_DIR": str(state_dir),
            "DOCINDEX_TEMPORAL_PORT": str(free_port()),
            "DOCINDEX_TEMPORAL_UI_PORT": str(free_port()),
            "DOCINDEX_API_PORT": str(free_port()),
            "HF_HUB_OFFLINE": "1",
            **extra,
        }
    )
    return env


def first_pages(pdf: Path, pages: int) -> bytes:
    """A new PDF of the first ``pages`` pages of ``pdf``."""
    import pypdfium2

    source, out = pypdfium2.PdfDocument(pdf), pypdfium2.PdfDocument.new()
    out.import_pages(source, list(range(pages)))
    buffer = io.BytesIO()
    out.save(buffer)
    return buffer.getvalue()


def run_input(settings: Settings, run_id: str, document_count: int, **overrides: Any) -> Any:
    """The input the API would start a run with; ``overrides`` name the tenant
    (``tenant_id``), orchestration options (``RunOptions``) or options of the spec's parser
    (``split_pdf_pages``, ``range_pages``, ``checkpoint_pages``)."""
    from docindex.spec import DoclingParser
    from workflows import starter

    base = starter.run_input(
        settings, run_id, document_count, overrides.pop("tenant_id", "default")
    )
    parser = {k: overrides.pop(k) for k in list(overrides) if k in DoclingParser.model_fields}
    spec = base.spec.model_copy(update={"parser": base.spec.parser.model_copy(update=parser)})
    return base.model_copy(
        update={"spec": spec, "options": base.options.model_copy(update=overrides)}
    )


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app over real HTTP on localhost (streams arrive as they are written,
    which the in-process transport does not do); yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
