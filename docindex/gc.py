"""Collect stored blobs that nothing references any more.

A tenant's upload and step artifacts of one content hash are held while the tenant has a
document with that hash; a PDF password while a document row still names it (cleared once
the document is indexed). Deleting a document or a run frees at once what it alone held
(``delete_documents``, ``delete_run``); ``collect`` sweeps the whole store on a schedule
(``GcWorkflow``) or from ``docindex gc`` and frees what is left (deletes that failed half
way, uploads refused after their bytes were stored, artifacts of documents deleted while a
step ran).

Safety against an identical upload arriving at the same moment (docs/decisions.md, "What
frees a blob"): blobs of a tenant are only ever deleted while holding the tenant's upload
lock (``lock_tenant_runs``), after checking under that lock that no document holds them. An
upload records its documents under the same lock and, once committed, stores again any of
its bytes that a collection deleted in between (``restore_uploads``): from then on its rows
hold them. The sweep also spares objects younger than a grace period, so bytes and passwords
an upload has just stored, and not yet recorded, are not even looked at. A big file part an
upload streamed in (``incoming/``) is never held by a document: its request copies it into
place and removes it; the sweep removes one a crashed API left, once it is an hour old.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import asyncpg

from docindex.blobstore import (
    ARTIFACT_KINDS,
    BlobStore,
    StoredObject,
    artifact_prefixes,
    tenant_prefix,
    upload_key,
)
from docindex.repository import lock_tenant_runs, transaction
from docindex.repository import storage as repo

log = logging.getLogger(__name__)

# A staged part is complete once its request's body has ended; its upload copies it into
# place within seconds. Older than this, whatever the sweep's grace, no upload needs it.
INCOMING_GRACE = timedelta(hours=1)
# Blobs checked and deleted per transaction: the tenant's upload lock is held that long.
_BATCH = 1000
# Where stored blobs sat before keys were the tenant's (``uploads/sha256/<hex>``, ...).
LEGACY = "(shared, before tenant keys)"

_HEX = r"[0-9a-f]{64}"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_KINDS = "|".join(ARTIFACT_KINDS)
_KEY = re.compile(
    rf"^(?:t/(?P<tenant>[^/]+)/)?(?:"
    rf"uploads/sha256/(?P<upload>{_HEX})"
    rf"|(?:{_KINDS})/(?P<artifact>{_HEX})/.+"
    rf"|secrets/runs/(?P<run>{_UUID})/pdf-password"
    rf"|(?P<incoming>incoming/[0-9a-f]{{32}}/[0-9]+)"
    rf")$"
)


@dataclass(frozen=True)
class Blob:
    """A stored object docindex knows how to reference; anything else is never touched."""

    key: str
    tenant: str | None  # None: stored before keys were the tenant's
    sha256: str | None  # an upload or a step artifact
    run_id: str | None  # a PDF password
    incoming: bool = False  # a big file part an upload streamed in (api/services/incoming.py)


def classify(key: str) -> Blob | None:
    m = _KEY.match(key)
    if m is None:
        return None
    tenant = unquote(m["tenant"]) if m["tenant"] else None
    return Blob(
        key=key,
        tenant=tenant,
        sha256=m["upload"] or m["artifact"],
        run_id=m["run"],
        incoming=m["incoming"] is not None,
    )


@dataclass
class TenantGarbage:
    objects: int = 0
    bytes: int = 0


@dataclass
class GcReport:
    """What a collection freed (or, dry, would free), per tenant."""

    dry_run: bool
    tenants: dict[str, TenantGarbage] = field(default_factory=dict)
    scanned: int = 0
    # Unreferenced for all we know, but younger than the grace period: left for next time.
    young: int = 0
    passwords_released: int = 0

    @property
    def objects(self) -> int:
        return sum(t.objects for t in self.tenants.values())

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tenants.values())

    def add(self, tenant: str | None, found: Iterable[StoredObject]) -> None:
        entry = self.tenants.setdefault(tenant or LEGACY, TenantGarbage())
        for o in found:
            entry.objects += 1
            entry.bytes += o.size


async def collect(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    *,
    grace: timedelta,
    dry_run: bool = False,
    tenant: str | None = None,
    now: datetime | None = None,
) -> GcReport:
    """Free every blob (of ``tenant``, or of all) nothing references and older than
    ``grace``; with ``dry_run`` only say what that would free."""
    report = GcReport(dry_run=dry_run)
    if not dry_run:
        report.passwords_released = await release_indexed_passwords(pool, blobs)
    now = now or datetime.now(UTC)
    groups: dict[str | None, list[tuple[Blob, StoredObject]]] = defaultdict(list)
    for o in await blobs.list_objects(tenant_prefix(tenant) if tenant else None):
        blob = classify(o.key)
        if blob is None:
            continue
        report.scanned += 1
        if now - o.last_modified < (max(grace, INCOMING_GRACE) if blob.incoming else grace):
            report.young += 1
            continue
        groups[blob.tenant].append((blob, o))
    await _unfinished_writes(blobs, tenant, now, dry_run, report)
    for owner, found in groups.items():
        for i in range(0, len(found), _BATCH):
            batch = found[i : i + _BATCH]
            async with transaction(pool) as conn:
                if owner is not None and not dry_run:
                    await lock_tenant_runs(conn, owner)
                garbage = await _unheld(conn, owner, batch)
                if garbage and not dry_run:
                    await blobs.delete_many([o.key for o in garbage])
            report.add(owner, garbage)
    if not dry_run and report.objects:
        log.info(
            "collected %d blobs (%d bytes) of %d tenants",
            report.objects,
            report.bytes,
            len(report.tenants),
        )
    return report


async def _unfinished_writes(
    blobs: BlobStore, tenant: str | None, now: datetime, dry_run: bool, report: GcReport
) -> None:
    """Part files an upload's big file left when its API died mid-body (a local store
    only; its listing does not show them), once no upload can be writing them."""
    prefixes = [f"{tenant_prefix(tenant)}incoming/"] if tenant else ["t/*/incoming/"]
    for prefix in prefixes:
        for path, size, modified in blobs.unfinished_writes(prefix):
            if now - modified < INCOMING_GRACE:
                report.young += 1
                continue
            assert blobs.local_root is not None
            owner = unquote(path.relative_to(blobs.local_root).parts[1])
            if not dry_run:
                path.unlink(missing_ok=True)
            report.add(owner, [StoredObject(key=str(path), size=size, last_modified=modified)])


async def _unheld(
    conn: asyncpg.Connection, owner: str | None, batch: Sequence[tuple[Blob, StoredObject]]
) -> list[StoredObject]:
    """The objects of ``batch`` no document holds (read under the owner's lock)."""
    hashes = {b.sha256 for b, _ in batch if b.sha256}
    held = await repo.held_hashes(conn, owner, list(hashes)) if hashes else set()
    passwords = [(b.run_id, b.key) for b, _ in batch if b.run_id]
    held |= await repo.held_password_keys(conn, passwords)
    return [o for b, o in batch if (b.sha256 not in held if b.sha256 else b.key not in held)]


@dataclass
class Freed:
    """Blobs a delete freed at once."""

    documents: int = 0
    objects: int = 0


async def delete_documents(
    pool: asyncpg.Pool, blobs: BlobStore, tenant: str, document_ids: Sequence[str]
) -> Freed:
    """Delete the tenant's documents and free the blobs only they held."""
    async with transaction(pool) as conn:
        await lock_tenant_runs(conn, tenant)
        released = await repo.delete_documents(conn, tenant, document_ids)
        return Freed(documents=len(released), objects=await _free(conn, blobs, released))


async def delete_run(pool: asyncpg.Pool, blobs: BlobStore, tenant: str, run_id: str) -> Freed:
    """Delete the tenant's run with its documents and free the blobs only they held."""
    async with transaction(pool) as conn:
        await lock_tenant_runs(conn, tenant)
        released = await repo.delete_run(conn, tenant, run_id)
        return Freed(documents=len(released), objects=await _free(conn, blobs, released))


async def _free(
    conn: asyncpg.Connection, blobs: BlobStore, released: Sequence[repo.Released]
) -> int:
    """Delete what the released rows held and no other row does; on the connection that
    deleted them, inside their transaction, under the tenant's lock. Returns how many
    objects went."""
    freed = 0
    by_tenant: dict[str, set[str]] = defaultdict(set)
    for r in released:
        by_tenant[r.tenant_id].add(r.sha256)
    for owner, hashes in by_tenant.items():
        held = await repo.held_hashes(conn, owner, list(hashes))
        for sha in hashes - held:
            freed += await _delete_content(
                blobs, upload_key(owner, sha), artifact_prefixes(owner, sha)
            )
    # Blobs stored before keys were the tenant's are freed once no tenant holds the bytes.
    legacy = {r.sha256 for r in released if not r.blob_key.startswith("t/")}
    for sha in legacy - await repo.held_hashes(conn, None, list(legacy)):
        legacy_artifacts = [f"{kind}/{sha}/" for kind in ARTIFACT_KINDS]
        freed += await _delete_content(blobs, f"uploads/sha256/{sha}", legacy_artifacts)
    passwords = {(r.run_id, r.password_key) for r in released if r.password_key}
    held_passwords = await repo.held_password_keys(conn, list(passwords))
    for _, key in passwords:
        if key not in held_passwords:
            await blobs.delete(key)
            freed += 1
    return freed


async def _delete_content(blobs: BlobStore, upload: str, artifacts: Sequence[str]) -> int:
    """Delete an upload and the artifacts under ``artifacts`` prefixes; return how many."""
    gone = 0
    if await blobs.exists(upload):
        await blobs.delete(upload)
        gone += 1
    for prefix in artifacts:
        gone += await blobs.delete_prefix(prefix)
    return gone


async def release_password(pool: asyncpg.Pool, blobs: BlobStore, document_id: str) -> bool:
    """The document is indexed: its parse succeeded and nothing of it needs the PDF's
    password again. Clear it from the row and delete it once no document of its run names
    it. Returns whether a password was released. Best effort: the sweep releases what a
    failure here leaves."""
    try:
        tenant = await repo.document_tenant(pool, document_id)
        if tenant is None:
            return False
        async with transaction(pool) as conn:
            # The tenant's lock orders the releases of one run's documents: the last one
            # sees the others' cleared rows and deletes the password.
            await lock_tenant_runs(conn, tenant)
            forgotten = await repo.forget_password(conn, document_id)
            if forgotten is None:
                return False
            if forgotten[1] not in await repo.held_password_keys(conn, [forgotten]):
                await blobs.delete(forgotten[1])
        return True
    except (OSError, asyncpg.PostgresError):
        log.warning("could not release the password of %s", document_id, exc_info=True)
        return False


async def release_indexed_passwords(pool: asyncpg.Pool, blobs: BlobStore) -> int:
    """Release the passwords indexed documents still name (indexed before passwords were
    released, or their release failed)."""
    released = 0
    while ids := await repo.indexed_with_password(pool, 500):
        done = [await release_password(pool, blobs, d) for d in ids]
        released += sum(done)
        if not any(done):
            break  # every release failed: leave them for the next sweep
    return released


async def restore_uploads(
    blobs: BlobStore,
    tenant: str,
    recorded: Mapping[str, str],
    store_again: Callable[[str, str], Awaitable[None]],
) -> int:
    """After an upload's documents are committed: store again bytes that a collection
    deleted between the upload storing (or finding) them and recording its documents.
    ``recorded`` maps each new document's sha256 to its blob key; ``store_again(sha256,
    key)`` stores those bytes. Returns how many were stored again (almost always none)."""
    restored = 0
    for sha, key in recorded.items():
        if not await blobs.exists(key):
            log.info("stored %s of tenant %s again: it was collected meanwhile", key, tenant)
            await store_again(sha, key)
            restored += 1
    return restored
