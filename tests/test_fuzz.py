"""Fuzz the API from its own OpenAPI schema (schemathesis): whatever comes in, no 5xx.

The API runs as a real HTTP server (`docindex api`, its own process) over the session's
Temporal and Postgres. Runs it starts go to a task queue no worker polls, so
fuzzed uploads are recorded and started but cost no parsing.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from temporalio.client import Client

from docindex.auth import create_api_key
from docindex.config import Settings
from docindex.database import create_pool

from .helpers import free_port
from .processes import worker_env


def new_key(database_url: str, tenant: str) -> str:
    async def make() -> str:
        pool = await create_pool(database_url, max_size=1)
        try:
            return await create_api_key(pool, tenant)
        finally:
            await pool.close()

    # Its own thread, so its own event loop: the session's loop is not to be touched here.
    out: list[str] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(make())))
    thread.start()
    thread.join()
    return out[0]


@pytest.fixture(scope="module")
def live_api(
    settings: Settings, client: Client, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    port = free_port()
    env = worker_env(
        settings,
        client,
        DOCINDEX_API_HOST="127.0.0.1",
        DOCINDEX_API_PORT=str(port),
        DOCINDEX_WORKFLOW_TASK_QUEUE=f"fuzz-unpolled-{uuid.uuid4().hex[:6]}",
        DOCINDEX_RATE_LIMIT="100000/minute",
        DOCINDEX_BAD_KEY_RATE_LIMIT="100000/minute",  # its auth check sends many bad keys
        DOCINDEX_MAX_UPLOAD_BYTES="1000000",
        DOCINDEX_TENANT_MAX_ACTIVE_RUNS="1000",
    )
    log = tmp_path_factory.mktemp("fuzz") / "api.log"
    with log.open("wb") as out:
        api = subprocess.Popen(
            [sys.executable, "-m", "cli", "api"], env=env, stdout=out, stderr=out
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert api.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the API did not start"
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        key = new_key(settings.database_url or "", f"fuzz-{uuid.uuid4().hex[:6]}")
        # The first search waits for the query model to load; not what is being fuzzed.
        httpx.post(
            f"{base_url}/v1/search",
            json={"query": "warm up"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=300,
        ).raise_for_status()
        yield base_url, key
    finally:
        api.terminate()
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()


def test_no_input_makes_the_api_fail(live_api: tuple[str, str]) -> None:
    base_url, key = live_api
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def fuzz(case: Any) -> None:
            # Not positive_data_acceptance: a fuzzer reusing an Idempotency-Key with another
            # body is rightly answered 422 (IETF idempotency-key draft), schema-valid or not.
            case.call_and_validate(
                base_url=base_url,
                headers=headers,
                excluded_checks=[positive_data_acceptance],
                timeout=120,  # a loaded CI machine is slow; slowness is not what this checks
            )

        fuzz()
