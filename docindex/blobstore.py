"""Durable blob storage through obstore: a local directory by default, any object store by URL.

Everything is stored under its tenant (``t/<tenant>/...``, docs/decisions.md "Blob keys are
the tenant's"): uploads are content-addressed within the tenant
(``t/<tenant>/uploads/sha256/<hex>``) so the same bytes are stored once per tenant; step
artifacts are keyed by tenant, content hash and step configuration so a retried or re-run
step finds its own earlier output. Nothing is shared between tenants: whether, and how
fast, an upload or a step finds bytes already stored says nothing about other tenants.
What nothing references any more is collected by ``docindex.gc``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import obstore
from obstore.exceptions import AlreadyExistsError, NotFoundError, NotSupportedError
from obstore.store import LocalStore, from_url

from docindex.config import Settings

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, ReadableFile

_HASH_BLOCK = 1024 * 1024
# Ranges fetched when a stored object is read as a file.
_READ_BLOCK = 256 * 1024
# Keys deleted per request: S3's DeleteObjects takes at most 1000.
_DELETE_BATCH = 1000


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime


class BlobStore:
    """Blob storage at ``url``, or the local directory ``default_root`` when ``url`` is None.

    For ``s3://<bucket>/<prefix>`` URLs nothing is configured here on purpose: obstore's S3
    builder reads the standard ``AWS_*`` variables itself (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``...),
    which is how production reaches MinIO; tests/test_blobstore.py checks this against moto.
    """

    def __init__(self, url: str | None, default_root: Path) -> None:
        self._copy_if_absent = True  # until the store says it cannot
        # The directory of a local store: where a write cut off by a crash leaves a part
        # file the store's listing does not show (``unfinished_writes``).
        self.local_root: Path | None = None
        if url is None:
            self.url = default_root.as_uri()
            self.local_root = default_root
        else:
            self.url = url
            if url.startswith("file://"):
                self.local_root = Path(url.removeprefix("file://"))
        if self.local_root is not None:
            self._store: Any = LocalStore(self.local_root, mkdir=True)
        else:
            self._store = from_url(url)

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        return cls(settings.blob_url, settings.blob_root)

    async def put(self, key: str, data: bytes | IO[bytes]) -> None:
        await obstore.put_async(self._store, key, data)

    def open_writer(self, key: str, buffer_bytes: int) -> AsyncWritableFile:
        """A file that streams into ``key``, in parts of ``buffer_bytes`` (a multipart
        upload once past one part); the object exists once it is closed, and a writer
        dropped unclosed leaves none."""
        return obstore.open_writer_async(self._store, key, buffer_size=buffer_bytes)

    def open_reader(self, key: str) -> IO[bytes]:
        """``key`` as a seekable file, fetched in ranges as it is read (blocking: call it
        off the event loop)."""
        raw = _RangeFile(obstore.open_reader(self._store, key, buffer_size=_READ_BLOCK))
        return io.BufferedReader(raw, buffer_size=_READ_BLOCK)

    async def copy_new(self, source: str, key: str) -> bool:
        """Copy ``source`` to ``key`` inside the store unless ``key`` exists (a hard link
        on a local directory, a server-side copy on S3); whether it copied. Meant for
        content-addressed keys: where the store cannot copy only-if-absent (S3 without a
        configured method), two copies racing write the same bytes."""
        if self._copy_if_absent:
            try:
                await obstore.copy_async(self._store, source, key, overwrite=False)
            except AlreadyExistsError:
                return False
            except NotSupportedError:
                self._copy_if_absent = False
            else:
                return True
        if await self.exists(key):
            return False
        await self.copy(source, key)
        return True

    async def copy(self, source: str, key: str) -> None:
        await obstore.copy_async(self._store, source, key)

    async def get(self, key: str) -> bytes:
        """Read ``key`` whole; a missing key raises the built-in ``FileNotFoundError``."""
        result = await obstore.get_async(self._store, key)
        return bytes(await result.bytes_async())

    async def exists(self, key: str) -> bool:
        try:
            await obstore.head_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            return False
        return True

    async def delete(self, key: str) -> None:
        """Delete ``key``; one already gone is no error (two collectors may race to it)."""
        try:
            await obstore.delete_async(self._store, key)
        except (NotFoundError, FileNotFoundError):
            pass

    async def delete_many(self, keys: list[str]) -> None:
        """Delete ``keys``; ones already gone are no error."""
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i : i + _DELETE_BATCH]
            try:
                await obstore.delete_async(self._store, batch)
            except (NotFoundError, FileNotFoundError):
                # A local directory stops at the first missing key (S3 does not): one by one.
                for key in batch:
                    await self.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many."""
        paths = [o.key for o in await self.list_objects(prefix)]
        await self.delete_many(paths)
        return len(paths)

    async def list_objects(self, prefix: str | None = None) -> list[StoredObject]:
        """Every object under ``prefix`` (everything when None), with its size and age."""
        found: list[StoredObject] = []
        async for batch in obstore.list(self._store, prefix, chunk_size=1000):
            found.extend(
                StoredObject(key=m["path"], size=m["size"], last_modified=m["last_modified"])
                for m in batch
            )
        return found

    def unfinished_writes(self, prefix: str) -> list[tuple[Path, int, datetime]]:
        """Part files of streamed writes under ``prefix`` that never completed (the
        process died mid-write), with their size and age, on a local store: its listing
        hides them. An object store keeps such parts as incomplete multipart uploads,
        which its own lifecycle rules remove."""
        if self.local_root is None:
            return []
        found = []
        for path in self.local_root.glob(f"{prefix}**/*#*"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found.append((path, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)))
        return found

    async def put_upload(
        self, tenant: str, file: IO[bytes], sha256: str | None = None
    ) -> tuple[str, str, int]:
        """Store a tenant's uploaded file under its sha256; return (key, sha256, size).

        Pass ``sha256`` when it is known: hashing a big file here would block the event
        loop of the API for as long as it takes."""
        sha, size = (sha256, _size(file)) if sha256 else _digest(file)
        key = upload_key(tenant, sha)
        if not await self.exists(key):
            file.seek(0)
            await self.put(key, file)
        return key, sha, size


class _RangeFile(io.RawIOBase):
    """obstore's reader as a standard binary file (it returns its own buffer type)."""

    def __init__(self, reader: ReadableFile) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def readinto(self, buffer: Any) -> int:
        data = self._reader.read(len(buffer))
        n = len(data)
        memoryview(buffer)[:n] = memoryview(data)
        return n

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


def _digest(file: IO[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    file.seek(0)
    while block := file.read(_HASH_BLOCK):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


def _size(file: IO[bytes]) -> int:
    size = file.seek(0, 2)
    file.seek(0)
    return size


def tenant_prefix(tenant: str) -> str:
    """Where everything of ``tenant`` is stored. Tenant names are already safe path
    segments (``docindex.auth.check_tenant_name``); quoting keeps that true whatever
    recorded a row."""
    return f"t/{quote(tenant, safe='')}/"


def upload_key(tenant: str, sha256: str) -> str:
    return f"{tenant_prefix(tenant)}uploads/sha256/{sha256}"


def incoming_key(tenant: str, request_id: str, part: int) -> str:
    """Where a big file part of an upload streams while its request is read, until it is
    checked and copied to its ``upload_key`` (api/services/incoming.py)."""
    return f"{tenant_prefix(tenant)}incoming/{request_id}/{part}"


def parsed_key(tenant: str, sha256: str, pipeline: str) -> str:
    return f"{tenant_prefix(tenant)}parsed/{sha256}/{pipeline}.json"


def parsed_meta_key(tenant: str, sha256: str, pipeline: str) -> str:
    return f"{tenant_prefix(tenant)}parsed/{sha256}/{pipeline}.meta.json"


def parsed_part_key(
    tenant: str, sha256: str, pipeline: str, first_page: int, last_page: int
) -> str:
    return (
        f"{tenant_prefix(tenant)}parsed/{sha256}/{pipeline}/"
        f"pages-{first_page:05d}-{last_page:05d}.json"
    )


def ocr_key(tenant: str, sha256: str, variant: str, pages: list[int]) -> str:
    digest = hashlib.sha256(",".join(map(str, pages)).encode()).hexdigest()[:12]
    return (
        f"{tenant_prefix(tenant)}parsed/{sha256}/{variant}/"
        f"ocr-{pages[0]:05d}-{pages[-1]:05d}-{digest}.json"
    )


def password_key(tenant: str, run_id: str) -> str:
    return f"{tenant_prefix(tenant)}secrets/runs/{run_id}/pdf-password"


def chunks_key(tenant: str, sha256: str, chunk_config: str) -> str:
    return f"{tenant_prefix(tenant)}chunks/{sha256}/{chunk_config}.json"


def vectors_key(tenant: str, sha256: str, chunk_config: str, model_slug: str) -> str:
    return f"{tenant_prefix(tenant)}vectors/{sha256}/{chunk_config}-{model_slug}.npy"


def document_text_key(tenant: str, sha256: str) -> str:
    return f"{tenant_prefix(tenant)}enrich/{sha256}/document.md"


def summary_key(tenant: str, sha256: str, model: str) -> str:
    return f"{tenant_prefix(tenant)}enrich/{sha256}/summary-{model}.json"


def contexts_key(
    tenant: str, sha256: str, model: str, chunk_config: str, first: int, last: int
) -> str:
    return (
        f"{tenant_prefix(tenant)}contexts/{sha256}/{model}-{chunk_config}/"
        f"{first:06d}-{last:06d}.json"
    )


# Kinds of step artifact: each stored under ``t/<tenant>/<kind>/<sha256>/``.
ARTIFACT_KINDS = ("parsed", "chunks", "vectors", "contexts", "enrich")


def artifact_prefixes(tenant: str, sha256: str) -> list[str]:
    """Everything a tenant's steps stored for one content hash (its upload is apart)."""
    return [f"{tenant_prefix(tenant)}{kind}/{sha256}/" for kind in ARTIFACT_KINDS]
