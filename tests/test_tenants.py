"""Every route needs a key, and a key of one tenant reaches nothing of another."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx

from docindex.auth import create_key, revoke_key
from docindex.config import Settings

from .conftest import TenantClient
from .helpers import wait_for_run

PUBLIC = {"/healthz", "/readyz", "/metrics"}


def tenant_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every operation of the published API but the public ones."""
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path not in PUBLIC
        for method in operations
    ]


def concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


async def test_every_route_but_health_and_metrics_requires_a_valid_key(api_app: Any) -> None:
    routes = tenant_routes(api_app)
    assert {path for _, path in routes} >= {"/v1/documents", "/v1/runs/{run_id}", "/v1/search"}
    ids = {
        "run_id": str(uuid.uuid4()),
        "document_id": str(uuid.uuid4()),
        "generation_id": str(uuid.uuid4()),
        "webhook_id": str(uuid.uuid4()),
        "source_id": str(uuid.uuid4()),
    }
    for n, (method, path) in enumerate(routes):
        url = concrete(path, ids)
        # Each route from an address of its own: one address may present only
        # bad_key_rate_limit bad keys a minute, and there are more routes than that.
        transport = httpx.ASGITransport(app=api_app, client=(f"192.0.2.{n + 1}", 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://docindex") as http:
            for headers in (
                {},
                {"Authorization": "Bearer dk_000000000000_not-a-key"},
                {"Authorization": "Basic dXNlcjpwYXNz"},
            ):
                response = await http.request(method, url, headers=headers)
                assert response.status_code == 401, (method, url, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
    transport = httpx.ASGITransport(app=api_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://docindex") as http:
        for path in PUBLIC:
            assert (await http.get(path)).status_code == 200, path


async def test_a_tenant_reaches_nothing_of_another(
    api_app: Any, tenant_client: TenantClient, settings: Settings
) -> None:
    alice = await tenant_client()
    bob = await tenant_client()
    text = f"Aurochs grazing notes {uuid.uuid4()}: the herd crossed the river at dawn.\n" * 20
    upload = await alice.post("/v1/documents", files={"files": ("herd.txt", text.encode())})
    assert upload.status_code == 202, upload.text
    run_id = upload.json()["run_id"]
    document_id = upload.json()["documents"][0]["document_id"]
    assert (await wait_for_run(alice, run_id))["status"] == "completed"

    generation = (await alice.get("/v1/generations")).json()["generations"][0]
    webhook = await alice.post(
        "/v1/webhooks", json={"url": "https://example.com/hook", "events": ["run.completed"]}
    )
    assert settings.source_file_root is not None
    folder = settings.source_file_root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    source = await alice.post("/v1/sources", json={"url": folder.as_uri(), "interval_s": 3600})
    assert source.status_code == 201, source.text
    ids = {
        "run_id": run_id,
        "document_id": document_id,
        "generation_id": generation["generation_id"],
        "webhook_id": webhook.json()["webhook_id"],
        "source_id": source.json()["source_id"],
    }
    probed: set[tuple[str, str]] = set()
    for method, path in tenant_routes(api_app):
        if "{" not in path:
            continue
        response = await bob.request(method, concrete(path, ids))
        assert response.status_code == 404, (method, path, response.text)
        probed.add((method, path))
    # Every route that names a run or a document was probed (new ones are picked up).
    assert ("DELETE", "/v1/documents/{document_id}") in probed
    assert ("POST", "/v1/runs/{run_id}/retry") in probed
    assert ("POST", "/v1/generations/{generation_id}/promote") in probed
    assert ("GET", "/v1/runs/{run_id}/events") in probed
    assert ("GET", "/v1/webhooks/{webhook_id}/deliveries") in probed
    assert ("DELETE", "/v1/sources/{source_id}") in probed
    assert (await alice.get(f"/v1/sources/{ids['source_id']}")).json()["status"] == "active"

    # Search and bulk retry see only the caller's own documents.
    query = {"query": "aurochs herd crossing the river", "top_k": 10}
    mine = (await alice.post("/v1/search", json=query)).json()["results"]
    assert document_id in {hit["document_id"] for hit in mine}
    theirs = (await bob.post("/v1/search", json=query)).json()["results"]
    assert document_id not in {hit["document_id"] for hit in theirs}
    # Naming Alice's generation does not reach it either.
    named = await bob.post("/v1/search", json={**query, "generation_id": ids["generation_id"]})
    assert named.status_code == 404, named.text
    bulk = await bob.post("/v1/retries", json={"error_type": "EmptyDocument"})
    assert bulk.json() == {"runs": 0, "documents": 0}

    # Bob uploading the same bytes gets a document of his own, not Alice's.
    again = await bob.post("/v1/documents", files={"files": ("herd.txt", text.encode())})
    assert again.status_code == 202
    assert again.json()["documents"][0]["document_id"] != document_id
    assert not again.json()["documents"][0]["duplicate"]
    await wait_for_run(bob, again.json()["run_id"])

    # After all that, Alice's document is untouched.
    detail = await alice.get(f"/v1/documents/{document_id}")
    assert detail.status_code == 200 and detail.json()["status"] == "completed"
    conn = await asyncpg.connect(settings.database_url)
    try:
        owners = await conn.fetch(
            "SELECT DISTINCT tenant_id FROM documents WHERE sha256 = $1",
            upload.json()["documents"][0]["sha256"],
        )
    finally:
        await conn.close()
    assert {r["tenant_id"] for r in owners} == {alice.tenant, bob.tenant}  # type: ignore[attr-defined]


async def test_keys_are_stored_hashed_and_revocation_locks_out(
    api_app: Any, tenant_client: TenantClient
) -> None:
    pool = api_app.state.resources.pool
    new = await create_key(pool, f"t-{uuid.uuid4().hex[:8]}", name="ci")
    stored = await pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", new.key_id)
    assert all(new.key not in str(value) for value in dict(stored).values())
    assert new.key.encode() not in bytes(stored["key_hash"])

    http = await tenant_client(tenant=new.tenant_id, key=new.key)
    assert (await http.post("/v1/search", json={"query": "x"})).status_code == 200
    spare = await create_key(pool, new.tenant_id)
    assert await revoke_key(pool, spare.key_id)
    revoked = await tenant_client(tenant=new.tenant_id, key=spare.key)
    response = await revoked.post("/v1/search", json={"query": "x"})
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


async def test_cli_creates_a_key_once_that_the_api_accepts(
    tenant_client: TenantClient, settings: Settings
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCINDEX_")}
    env["DOCINDEX_DATABASE_URL"] = settings.database_url or ""
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "keys",
        "create",
        "--tenant",
        tenant,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, errors = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, errors.decode()
    key = out.decode().strip()
    assert key.startswith("dk_") and "not shown again" in errors.decode()
    http = await tenant_client(tenant=tenant, key=key)
    assert (await http.post("/v1/search", json={"query": "anything"})).status_code == 200

    async def cli(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli",
            "keys",
            *args,
            env={**env, "COLUMNS": "200"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
        return process.returncode or 0, out.decode()

    key_id = key.split("_")[1]
    code, listing = await cli("list", "--tenant", tenant)
    assert code == 0 and key_id in listing and key not in listing
    code, _ = await cli("revoke", key_id)
    assert code == 0
    # This key was just used, so the API trusts it from its cache for up to 10 s more.
    revoked = await tenant_client(tenant=tenant, key=key)
    deadline = time.monotonic() + 15
    while (await revoked.post("/v1/search", json={"query": "x"})).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works after 15 s"
        await asyncio.sleep(1)

    bad = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "keys",
        "create",
        "--tenant",
        "../Evil Tenant",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await asyncio.wait_for(bad.communicate(), timeout=120)
    assert bad.returncode == 2 and "tenant name" in errors.decode()
