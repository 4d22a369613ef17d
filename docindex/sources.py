"""Sources that sync themselves: a prefix of an S3 bucket or a local folder whose objects
are indexed as they appear, change and go (``POST /v1/sources``, ``SourceWorkflow``).

A sync lists the source a page at a time and notes each object's version (ETag, size,
mtime) in Postgres (``repository.sources``); what is new or changed is pending. Pending
objects are copied into the tenant's blob keys like uploads (streamed, hashed, checked by
format and size) and recorded as runs of at most ``source_run_documents`` documents through
``docindex.intake``, the same code an upload records its run with; a changed object's
document is indexed again in the new run and keeps its chunks until the new ones are
stored. A tenant at its quota of active runs or documents in flight makes the sync wait,
not fail. Once a listing completes, the documents of objects it did not see are deleted.

Credentials never come from a request or a workflow: obstore reads ``AWS_*`` from the
worker's environment. A ``file://`` source must lie under ``source_file_root``, and no
file is read whose real path leaves the source's folder (a symlink out of it).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlsplit

import asyncpg
import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, from_url

from docindex import gc, intake
from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.repository import NewDocument, lock_tenant_runs, transaction
from docindex.repository import sources as repo
from docindex.repository.quotas import tenant_usage
from docindex.repository.sources import ListedObject, NewContent, SourceObject, SourceRow
from docindex.spec import PipelineSpec
from docindex.upload_check import RefusedUpload, check_upload, clean_filename

log = logging.getLogger(__name__)

# Objects per listing page (S3 lists at most 1000 per request).
LIST_PAGE = 1000
_SPOOL_IN_MEMORY = 8 * 1024 * 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


class InvalidSource(ValueError):
    """A source URL docindex will not read."""


class ObjectRefused(Exception):
    """This version of an object cannot be indexed (format, size)."""


@dataclass(frozen=True)
class SourceLocation:
    """Where a source's objects are: a bucket (``s3://``) or a folder (``file://``), and the
    prefix of their keys within it."""

    bucket: str | None
    folder: Path | None
    prefix: str


def parse_source_url(url: str, file_root: Path | None) -> SourceLocation:
    """The location ``url`` names, or ``InvalidSource``. ``file://`` URLs must name a folder
    under ``file_root`` (none is allowed when it is None)."""
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise InvalidSource("a source URL has no query or fragment")
    if parts.scheme == "s3":
        # Credentials come from the environment only: none in the URL.
        if "@" in parts.netloc or not _BUCKET.match(parts.netloc):
            raise InvalidSource("s3:// URLs are s3://<bucket>/<prefix>/")
        prefix = unquote(parts.path).lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if any(p in ("..", ".") for p in PurePosixPath(prefix).parts):
            raise InvalidSource("a prefix has no . or .. segments")
        return SourceLocation(bucket=parts.netloc, folder=None, prefix=prefix)
    if parts.scheme == "file":
        if file_root is None:
            raise InvalidSource("file:// sources are not allowed on this server")
        if parts.netloc not in ("", "localhost"):
            raise InvalidSource("file:// URLs name a local folder: file:///path/")
        path = Path(unquote(parts.path))
        if not path.is_absolute() or ".." in path.parts:
            raise InvalidSource("file:// URLs name an absolute folder without ..")
        folder, root = path.resolve(), file_root.resolve()
        if not folder.is_relative_to(root):
            raise InvalidSource("this folder is outside the folders sources may read")
        if not folder.is_dir():
            raise InvalidSource("no such folder")
        return SourceLocation(bucket=None, folder=folder, prefix="")
    raise InvalidSource("a source URL is s3://<bucket>/<prefix>/ or file:///<folder>/")


def included(relative_key: str, include: Sequence[str]) -> bool:
    """Whether a key (relative to the source's prefix) matches one of the glob patterns
    (``*`` matches across ``/``); no patterns includes everything."""
    if not include:
        return True
    return any(fnmatch.fnmatchcase(relative_key, pattern) for pattern in include)


class SourceReader:
    """A source's objects through obstore: listed a page at a time, HEAD, streamed."""

    def __init__(self, location: SourceLocation) -> None:
        self.location = location
        if location.bucket is not None:
            # obstore's S3 builder reads AWS_* from the environment (as docindex.blobstore).
            self._store: Any = from_url(f"s3://{location.bucket}")
        else:
            assert location.folder is not None
            self._store = LocalStore(location.folder)

    def wanted(self, key: str, include: Sequence[str]) -> bool:
        prefix = self.location.prefix
        if not key.startswith(prefix) or key.endswith("/"):
            return False
        return included(key[len(prefix) :], include)

    async def list_page(self, after: str | None, limit: int = LIST_PAGE) -> list[ListedObject]:
        """The first ``limit`` objects (in key order) after the key ``after``."""
        found: list[ListedObject] = []
        stream = obstore.list(
            self._store, self.location.prefix or None, offset=after, chunk_size=limit
        )
        async for batch in stream:
            found.extend(_listed(m) for m in batch)
            # S3 lists in key order; a folder is walked in no order, so it is read whole.
            if self.location.bucket is not None and len(found) >= limit:
                break
        found.sort(key=lambda o: o.key)
        return found[:limit]

    async def head(self, key: str) -> ListedObject | None:
        try:
            return _listed(await obstore.head_async(self._store, key))
        except (NotFoundError, FileNotFoundError):
            return None

    async def fetch(self, key: str, max_bytes: int) -> tuple[IO[bytes], str, int]:
        """Stream the object into a temporary file (in memory while small); return the file,
        its sha256 and size. ``FileNotFoundError`` if it is gone, ``ObjectRefused`` past
        ``max_bytes``."""
        if self.location.folder is not None:
            self._confine(key)
        try:
            result = await obstore.get_async(self._store, key)
        except NotFoundError as exc:
            raise FileNotFoundError(key) from exc
        spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)
        digest, size = hashlib.sha256(), 0
        try:
            async for chunk in result.stream(min_chunk_size=1024 * 1024):
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectRefused(f"over the limit of {max_bytes} bytes")
                digest.update(chunk)
                await asyncio.to_thread(spool.write, bytes(chunk))
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool, digest.hexdigest(), size

    def _confine(self, key: str) -> None:
        """Refuse a file whose real path leaves the folder (a symlink pointing out)."""
        assert self.location.folder is not None
        folder = os.path.realpath(self.location.folder)
        real = os.path.realpath(os.path.join(folder, key))
        if os.path.commonpath([folder, real]) != folder:
            raise ObjectRefused("its real path is outside the source's folder")


def _listed(meta: Any) -> ListedObject:
    return ListedObject(
        key=meta["path"],
        etag=meta.get("e_tag"),
        size_bytes=meta["size"],
        modified_at=meta.get("last_modified"),
    )


class StartRun(Protocol):
    """Start a recorded run's IndexingWorkflow (``workflows.starter.start_run``, passed in
    by the worker: the core does not import the workflows)."""

    async def __call__(
        self,
        run_id: str,
        document_count: int,
        tenant_id: str,
        spec: PipelineSpec,
        generation_id: str,
    ) -> object: ...


@dataclass(frozen=True)
class ImportOutcome:
    recorded: int  # objects recorded as documents of the run
    run_id: str | None
    refused: int  # objects whose version cannot be indexed
    waiting: bool  # the tenant is at its quota: try again later
    more: bool  # there may be more pending objects to record now


class SourceSync:
    """What a source's sync does, step by step; ``activities/sources.py`` runs each step."""

    def __init__(
        self, pool: asyncpg.Pool, blobs: BlobStore, settings: Settings, start_run: StartRun
    ) -> None:
        self.pool = pool
        self.blobs = blobs
        self.settings = settings
        self.start_run = start_run

    async def _open(self, source_id: str) -> tuple[SourceRow, SourceReader]:
        row = await repo.get_source(self.pool, source_id)
        if row is None:
            raise LookupError(f"no source {source_id}")
        # Checked again here, with this worker's own settings: the API is not the only gate.
        location = parse_source_url(row.url, self.settings.source_file_root)
        return row, SourceReader(location)

    async def begin(self, source_id: str) -> int:
        return await repo.begin_sync(self.pool, source_id)

    async def list_page(self, source_id: str, after: str | None) -> tuple[str | None, int]:
        """Note one page of the listing; return the key to list after next (None: the
        listing is complete) and how many new or changed objects it found."""
        row, reader = await self._open(source_id)
        page = await reader.list_page(after)
        listed = [o for o in page if reader.wanted(o.key, row.include)]
        changed = await repo.record_listed(self.pool, source_id, listed) if listed else 0
        return (page[-1].key if len(page) >= LIST_PAGE else None), changed

    async def remove_missing(self, source_id: str, sync_no: int) -> int:
        """After the complete listing ``sync_no``: delete what it did not see."""
        row = await repo.get_source(self.pool, source_id)
        assert row is not None
        return await self._remove(row, await repo.gone_objects(self.pool, source_id, sync_no))

    async def check_keys(self, source_id: str, keys: Sequence[str]) -> int:
        """Look at these keys now (an event named them): note their version, or remove
        their documents when they are gone. Returns how many became pending."""
        row, reader = await self._open(source_id)
        wanted = [k for k in dict.fromkeys(keys) if reader.wanted(k, row.include)]
        seen: list[ListedObject] = []
        gone: list[str] = []
        for key in wanted:
            meta = await reader.head(key)
            if meta is None:
                gone.append(key)
            else:
                seen.append(meta)
        changed = await repo.record_listed(self.pool, source_id, seen) if seen else 0
        if gone:
            await self._remove(row, await repo.gone_objects(self.pool, source_id, keys=gone))
        return changed

    async def _remove(self, row: SourceRow, gone: Sequence[SourceObject]) -> int:
        """Delete the documents of objects that are gone, and forget the objects. One whose
        document is being indexed is left for the next sync (it cannot be deleted now)."""
        removable: list[SourceObject] = []
        for obj in gone:
            if obj.document_id is None or await repo.document_done(self.pool, obj.document_id):
                removable.append(obj)
        documents = [o.document_id for o in removable if o.document_id is not None]
        if documents:
            await gc.delete_documents(self.pool, self.blobs, row.tenant_id, documents)
        await repo.forget_objects(self.pool, row.source_id, [o.key for o in removable])
        return len(removable)

    async def import_pending(
        self, source_id: str, heartbeat: Callable[[], None] = lambda: None
    ) -> ImportOutcome:
        """Record up to one run of pending objects and start it. Waits (``waiting``) rather
        than failing when the tenant is at its limit of active runs or documents in flight."""
        settings = self.settings
        row, reader = await self._open(source_id)
        if row.status != "active":
            return ImportOutcome(0, None, 0, waiting=False, more=False)
        tenant = row.tenant_id
        usage = await tenant_usage(self.pool, tenant)
        room = min(
            settings.source_run_documents,
            settings.max_files_per_request,
            settings.tenant_max_documents_in_flight - usage.documents_in_flight,
        )
        if usage.active_runs >= settings.tenant_max_active_runs or room <= 0:
            return ImportOutcome(0, None, 0, waiting=True, more=True)
        picked = await repo.pending_objects(self.pool, source_id, room)
        if not picked:
            return ImportOutcome(0, None, 0, waiting=False, more=False)

        run_id = str(uuid.uuid4())
        new: list[NewDocument] = []
        replaced: list[NewContent] = []
        recorded: list[tuple[SourceObject, str]] = []
        unchanged: list[tuple[SourceObject, str]] = []
        opened: list[IO[bytes]] = []
        files: dict[str, IO[bytes]] = {}
        blob_keys: dict[str, str] = {}
        refused = 0
        gone: list[SourceObject] = []
        try:
            for obj in picked:
                heartbeat()
                name = clean_filename(obj.key)
                try:
                    file, sha256, size = await reader.fetch(obj.key, settings.max_upload_bytes)
                    opened.append(file)
                    files.setdefault(sha256, file)
                    await asyncio.to_thread(
                        _check, file, name, settings.allowed_types, settings.archive_limits
                    )
                except FileNotFoundError:
                    gone.append(obj)  # deleted since it was listed
                    continue
                except ObjectRefused as exc:
                    refused += 1
                    await repo.mark_refused(self.pool, source_id, obj, str(exc))
                    continue
                if obj.document_id is not None and obj.document_sha256 == sha256:
                    # Touched, not changed (a new mtime, the same bytes): nothing to index.
                    unchanged.append((obj, obj.document_id))
                    continue
                key, _, _ = await self.blobs.put_upload(tenant, file, sha256)
                blob_keys[sha256] = key
                if obj.document_id is not None:
                    document_id = obj.document_id
                    replaced.append(NewContent(document_id, name, sha256, size, key))
                else:
                    document_id = str(uuid.uuid4())
                    new.append(NewDocument(document_id, name, sha256, size, key))
                recorded.append((obj, document_id))
            if gone:
                await self._remove(row, gone)
            if unchanged:
                async with transaction(self.pool) as conn:
                    await repo.mark_recorded(conn, source_id, unchanged)
            if not recorded:
                return ImportOutcome(0, None, refused, waiting=False, more=True)
            spec, generation_id = await intake.run_spec(self.pool, settings, tenant)
            try:
                async with transaction(self.pool) as conn:
                    await lock_tenant_runs(conn, tenant)
                    await intake.record_run(
                        conn,
                        settings,
                        tenant,
                        run_id,
                        new,
                        spec=spec,
                        generation_id=generation_id,
                        replaced=replaced,
                    )
                    await repo.mark_recorded(conn, source_id, recorded)
            except (intake.TooManyActiveRuns, intake.TooManyDocumentsInFlight):
                # Another intake took the room meanwhile; the bytes stay stored (by digest).
                return ImportOutcome(0, None, refused, waiting=True, more=True)
            except intake.StorageQuotaExceeded as exc:
                for obj, _ in recorded:
                    await repo.mark_refused(self.pool, source_id, obj, str(exc))
                return ImportOutcome(0, None, refused + len(recorded), waiting=False, more=True)

            # A collection may have taken bytes we found stored before our rows held them.
            async def store_again(sha256: str, key: str) -> None:
                files[sha256].seek(0)
                await self.blobs.put(key, files[sha256])

            await gc.restore_uploads(self.blobs, tenant, blob_keys, store_again)
        finally:
            for file in opened:
                file.close()
        count = len(new) + len(replaced)
        await self.start_run(run_id, count, tenant, spec, generation_id)
        return ImportOutcome(count, run_id, refused, waiting=False, more=len(picked) >= room)

    async def finish(self, source_id: str, sync_no: int) -> None:
        await repo.finish_sync(self.pool, source_id, sync_no)

    async def purge(self, source_id: str) -> int:
        """Delete the source's documents that are not being indexed; return how many are
        left (being indexed: purge again once they are done)."""
        row = await repo.get_source(self.pool, source_id)
        if row is None:
            return 0
        documents = await repo.source_documents(self.pool, source_id)
        done = [d for d, is_done in documents if is_done]
        if done:
            await gc.delete_documents(self.pool, self.blobs, row.tenant_id, done)
        return len(documents) - len(done)


def _check(file: IO[bytes], name: str, allowed: Sequence[str], archive: Any) -> None:
    try:
        check_upload(file, name, allowed, archive)
    except RefusedUpload as exc:
        raise ObjectRefused(str(exc)) from exc
