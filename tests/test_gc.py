"""Blobs are the tenant's, and what nothing references any more is collected (issue #16
item 4, issue #17 item 5): per-tenant keys and cost, deletes that free what only they held,
an identical upload racing a delete, PDF passwords, the sweep and its schedule."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from activities.gc import GcInput
from docindex import gc
from docindex.blobstore import (
    BlobStore,
    incoming_key,
    password_key,
    tenant_prefix,
    upload_key,
)
from docindex.config import Settings
from docindex.runs import record_files
from workflows.gc import GC_SCHEDULE_ID, GcWorkflow, ensure_gc_schedule

from .conftest import TenantClient
from .helpers import wait_for_run


def note(words: str) -> bytes:
    return f"# {words}\n\nGrey herons wade in shallow water. {uuid.uuid4()}\n".encode()


async def upload(http: httpx.AsyncClient, name: str, data: bytes, **form: str) -> dict[str, Any]:
    response = await http.post("/v1/documents", files=[("files", (name, data))], data=form)
    assert response.status_code == 202, response.text
    return response.json()


def kinds(keys: list[str], tenant: str) -> list[str]:
    """What each key is (upload, parsed, chunks...): names differ by tenant, the kinds not."""
    return sorted(k.removeprefix(tenant_prefix(tenant)).split("/")[0] for k in keys)


async def tenant_keys(blobs: BlobStore, tenant: str) -> list[str]:
    return sorted(o.key for o in await blobs.list_objects(tenant_prefix(tenant)))


async def test_tenants_share_no_blobs_and_each_pays_for_its_own_run(
    tenant_client: TenantClient, settings: Settings
) -> None:
    a, b = await tenant_client(), await tenant_client()
    data = note("Heron notes")
    first = await upload(a, "h.md", data)
    run_a = await wait_for_run(a, first["run_id"])
    second = await upload(b, "h.md", data)
    assert not second["documents"][0]["duplicate"]
    run_b = await wait_for_run(b, second["run_id"])
    assert run_a["status"] == run_b["status"] == "completed"

    # B's run did every step itself: its own tokens, as many as A's, no step reused.
    doc_a, doc_b = run_a["documents"][0], run_b["documents"][0]
    assert doc_b["tokens"] and doc_b["tokens"] == doc_a["tokens"]
    assert doc_b["cost_usd"] == doc_a["cost_usd"]
    assert run_b["tokens"] == run_a["tokens"]

    # Each tenant's upload and artifacts under its own prefix, the same set of each.
    blobs = BlobStore.from_settings(settings)
    keys_a = await tenant_keys(blobs, a.tenant)  # type: ignore[attr-defined]
    keys_b = await tenant_keys(blobs, b.tenant)  # type: ignore[attr-defined]
    sha = hashlib.sha256(data).hexdigest()
    assert upload_key(a.tenant, sha) in keys_a  # type: ignore[attr-defined]
    assert upload_key(b.tenant, sha) in keys_b  # type: ignore[attr-defined]
    assert any("/parsed/" in k for k in keys_b) and any("/vectors/" in k for k in keys_b)
    assert kinds(keys_a, a.tenant) == kinds(keys_b, b.tenant)  # type: ignore[attr-defined]
    assert not set(keys_a) & set(keys_b)
    # Nothing of either is stored outside the tenants' prefixes.
    assert not [o for o in await blobs.list_objects(f"uploads/sha256/{sha}")]


async def test_deleting_a_document_frees_its_blobs_unless_another_document_holds_them(
    api_app: Any, api: httpx.AsyncClient, settings: Settings
) -> None:
    tenant: str = api.tenant  # type: ignore[attr-defined]
    pool, blobs = api_app.state.resources.pool, BlobStore.from_settings(settings)
    data = note("Kept while held")
    accepted = await upload(api, "k.md", data)
    await wait_for_run(api, accepted["run_id"])
    held = await tenant_keys(blobs, tenant)
    assert len(held) > 3
    # A second document of the same tenant with the same bytes (recorded without the
    # upload's dedup, as a run that never started).
    _, (twin,) = await record_files(pool, blobs, [("twin.md", data)], tenant_id=tenant)

    document_id = accepted["documents"][0]["document_id"]
    assert (await api.delete(f"/v1/documents/{document_id}")).status_code == 204
    assert await tenant_keys(blobs, tenant) == held, "the twin still holds them all"

    freed = await gc.delete_documents(pool, blobs, tenant, [twin])
    assert freed.documents == 1 and freed.objects == len(held)
    assert await tenant_keys(blobs, tenant) == []


async def test_deleting_a_finished_run_frees_what_only_it_held(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    tenant: str = api.tenant  # type: ignore[attr-defined]
    blobs = BlobStore.from_settings(settings)
    shared, own = note("In both runs"), note("Only in the first run")
    first = await upload(api, "a.md", shared)
    await wait_for_run(api, first["run_id"])
    second = await upload(api, "b.md", own)
    assert not (await api.delete(f"/v1/runs/{uuid.uuid4()}")).is_success
    await wait_for_run(api, second["run_id"])
    own_sha = hashlib.sha256(own).hexdigest()
    shared_sha = hashlib.sha256(shared).hexdigest()

    assert (await api.delete(f"/v1/runs/{second['run_id']}")).status_code == 204
    assert (await api.get(f"/v1/runs/{second['run_id']}")).status_code == 404
    keys = await tenant_keys(blobs, tenant)
    assert not [k for k in keys if own_sha in k]
    assert upload_key(tenant, shared_sha) in keys and len(keys) > 1
    assert (await api.delete(f"/v1/runs/{second['run_id']}")).status_code == 404


async def test_an_identical_upload_racing_a_delete_keeps_its_bytes(
    api_app: Any, api: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload finds its bytes stored (the document being deleted holds them) and so
    does not store them; the delete then frees them; the upload records its document.
    Collections delete only under the tenant's upload lock and the upload stores again,
    once its rows hold the key, what was collected meanwhile: the run reads its bytes."""
    tenant: str = api.tenant  # type: ignore[attr-defined]
    data = note("Racing")
    key = upload_key(tenant, hashlib.sha256(data).hexdigest())
    first = await upload(api, "r.md", data)
    await wait_for_run(api, first["run_id"])

    store: BlobStore = api_app.state.resources.blobs
    real_exists = store.exists
    stored, go = asyncio.Event(), asyncio.Event()

    async def found_then_wait(blob_key: str) -> bool:
        found = await real_exists(blob_key)
        if blob_key == key and not stored.is_set():  # finds the bytes, stores nothing
            assert found
            stored.set()
            await go.wait()
        return found

    monkeypatch.setattr(store, "exists", found_then_wait)
    racing = asyncio.create_task(upload(api, "r-again.md", data))
    await asyncio.wait_for(stored.wait(), 30)
    document_id = first["documents"][0]["document_id"]
    assert (await api.delete(f"/v1/documents/{document_id}")).status_code == 204
    assert not await store.exists(key), "the delete freed the bytes"
    go.set()
    again = await asyncio.wait_for(racing, 60)
    monkeypatch.undo()

    assert not again["documents"][0]["duplicate"], "the document it duplicated is gone"
    assert await store.exists(key)
    run = await wait_for_run(api, again["run_id"])
    assert run["status"] == "completed", run["documents"][0]


async def test_a_pdf_password_goes_once_the_document_is_indexed_or_deleted(
    api: httpx.AsyncClient, settings: Settings, corpus: Path
) -> None:
    tenant: str = api.tenant  # type: ignore[attr-defined]
    blobs = BlobStore.from_settings(settings)
    data = (corpus / "broken/r6-user-password.pdf").read_bytes()

    wrong = await upload(api, "r6.pdf", data, password="nope")
    failed = await wait_for_run(api, wrong["run_id"])
    assert failed["documents"][0]["error_type"] == "EncryptedDocument"
    # A failed document keeps its password: a retry (with the right bytes) may need it.
    assert await blobs.exists(password_key(tenant, wrong["run_id"]))

    right = await upload(api, "r6.pdf", data, password="asdfzxcv")
    done = await wait_for_run(api, right["run_id"])
    assert done["status"] == "completed"
    assert not await blobs.exists(password_key(tenant, right["run_id"]))
    conn = await asyncpg.connect(settings.database_url)
    try:
        assert (
            await conn.fetchval(
                "SELECT password_key FROM documents WHERE document_id = $1",
                uuid.UUID(right["documents"][0]["document_id"]),
            )
            is None
        )
    finally:
        await conn.close()

    failed_id = wrong["documents"][0]["document_id"]
    assert (await api.delete(f"/v1/documents/{failed_id}")).status_code == 204
    assert not await blobs.exists(password_key(tenant, wrong["run_id"]))


async def garbage_of_a_new_tenant(blobs: BlobStore) -> tuple[str, list[str], int]:
    """Blobs of a fresh tenant that no document references: an upload, artifacts of it,
    a password; and a stranger object the collector must never touch."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    sha = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    keys = {
        upload_key(tenant, sha): b"x" * 100,
        f"{tenant_prefix(tenant)}parsed/{sha}/simple.json": b"y" * 20,
        f"{tenant_prefix(tenant)}chunks/{sha}/c.json": b"z" * 3,
        password_key(tenant, str(uuid.uuid4())): b"secret",
    }
    for key, value in keys.items():
        await blobs.put(key, value)
    await blobs.put(f"{tenant_prefix(tenant)}notes/readme.txt", b"not docindex's to judge")
    return tenant, sorted(keys), sum(len(v) for v in keys.values())


async def test_a_part_an_upload_streamed_in_is_collected_once_no_upload_can_need_it(
    settings: Settings, api_app: Any
) -> None:
    """An API process that died between streaming a big file part and copying it into
    place leaves it staged, and one that died in the middle of the part leaves the local
    store's unfinished part file (which its listing hides); the sweep frees both, but
    never while an upload may still be writing or copying them, even with a grace of 0."""
    blobs = BlobStore.from_settings(settings)
    assert blobs.local_root is not None
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    key = incoming_key(tenant, uuid.uuid4().hex, 0)
    await blobs.put(key, b"w" * 7)
    cut_off = blobs.local_root / f"{incoming_key(tenant, uuid.uuid4().hex, 0)}#1"
    cut_off.parent.mkdir(parents=True)
    cut_off.write_bytes(b"p" * 5)
    assert not [o for o in await blobs.list_objects(tenant_prefix(tenant)) if "#" in o.key]
    pool = api_app.state.resources.pool
    now = await gc.collect(pool, blobs, grace=timedelta(0), tenant=tenant)
    assert (now.objects, now.young) == (0, 2) and await blobs.exists(key) and cut_off.exists()
    later = datetime.now(UTC) + gc.INCOMING_GRACE + timedelta(minutes=1)
    freed = await gc.collect(pool, blobs, grace=timedelta(0), tenant=tenant, now=later)
    assert (freed.objects, freed.bytes) == (2, 12)
    assert not await blobs.exists(key) and not cut_off.exists()


def run_cli(settings: Settings, *args: str) -> str:
    env = {
        **os.environ,
        "DOCINDEX_DATABASE_URL": settings.database_url or "",
        "DOCINDEX_DATA_DIR": str(settings.data_dir),
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "cli", "gc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_gc_dry_run_lists_without_deleting_then_gc_frees(
    settings: Settings, api_app: Any
) -> None:
    blobs = BlobStore.from_settings(settings)
    tenant, keys, size = await garbage_of_a_new_tenant(blobs)

    # Within the grace period nothing is even judged.
    young = await gc.collect(
        api_app.state.resources.pool, blobs, grace=timedelta(hours=1), tenant=tenant
    )
    assert young.objects == 0 and young.young == len(keys)

    listed = run_cli(settings, "--dry-run", "--tenant", tenant, "--grace-s", "0")
    assert "would free" in listed
    row = next(line for line in listed.splitlines() if tenant in line)
    assert f"{len(keys)}" in row and f"{size}" in row, listed
    assert all([await blobs.exists(k) for k in keys]), "a dry run deletes nothing"

    freed = run_cli(settings, "--tenant", tenant, "--grace-s", "0")
    assert "freed" in freed
    assert await tenant_keys(blobs, tenant) == [f"{tenant_prefix(tenant)}notes/readme.txt"]


async def test_the_gc_schedule_is_created_idempotently_and_its_workflow_collects(
    client: Client, settings: Settings, api_app: Any
) -> None:
    # A long grace: the schedule's own sweeps must not judge other tests' fresh blobs.
    patient = settings.model_copy(update={"gc_grace_s": 30 * 86400.0})
    await ensure_gc_schedule(client, patient)
    await ensure_gc_schedule(client, patient)  # a second worker start: no error
    handle = client.get_schedule_handle(GC_SCHEDULE_ID)
    try:
        described = await handle.describe()
        action = described.schedule.action
        assert action.workflow == "GcWorkflow"  # type: ignore[attr-defined]
        assert action.task_queue == settings.workflow_task_queue  # type: ignore[attr-defined]
    finally:
        await handle.delete()

    blobs = BlobStore.from_settings(settings)
    tenant, keys, size = await garbage_of_a_new_tenant(blobs)
    summary = await client.execute_workflow(
        GcWorkflow.run,
        GcInput(grace_s=0, tenant=tenant),
        id=f"gc-test-{uuid.uuid4()}",
        task_queue=settings.workflow_task_queue,
    )
    assert summary.objects == len(keys) and summary.bytes == size
    assert summary.tenants[tenant].objects == len(keys)
    assert not [k for k in keys if await blobs.exists(k)]
