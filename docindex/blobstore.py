"""Durable blob storage through obstore: a local directory by default, any object store by URL.

Uploads are content-addressed (``uploads/sha256/<hex>``) so the same bytes are stored once;
step artifacts are keyed by content hash and step configuration so a retried or re-run
step finds its own earlier output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, from_url

from docindex.config import Settings

_HASH_BLOCK = 1024 * 1024


class BlobStore:
    """Blob storage at ``url``, or the local directory ``default_root`` when ``url`` is None.

    For ``s3://<bucket>/<prefix>`` URLs nothing is configured here on purpose: obstore's S3
    builder reads the standard ``AWS_*`` variables itself (``AWS_ENDPOINT_URL``,
    ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ALLOW_HTTP``...),
    which is how production reaches MinIO; tests/test_blobstore.py checks this against moto.
    """

    def __init__(self, url: str | None, default_root: Path) -> None:
        if url is None:
            self.url = default_root.as_uri()
            self._store = LocalStore(default_root, mkdir=True)
        else:
            self.url = url
            if url.startswith("file://"):
                self._store = LocalStore(Path(url.removeprefix("file://")), mkdir=True)
            else:
                self._store = from_url(url)

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobStore:
        return cls(settings.blob_url, settings.blob_root)

    async def put(self, key: str, data: bytes | IO[bytes]) -> None:
        await obstore.put_async(self._store, key, data)

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
        await obstore.delete_async(self._store, key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; return how many."""
        found = await obstore.list(self._store, prefix).collect_async()
        paths = [meta["path"] for meta in found]
        if paths:
            await obstore.delete_async(self._store, paths)
        return len(paths)

    async def put_upload(self, file: IO[bytes], sha256: str | None = None) -> tuple[str, str, int]:
        """Store an uploaded file under its sha256; return (key, sha256, size).

        Pass ``sha256`` when it is known: hashing a big file here would block the event
        loop of the API for as long as it takes."""
        sha, size = (sha256, _size(file)) if sha256 else _digest(file)
        key = upload_key(sha)
        if not await self.exists(key):
            file.seek(0)
            await self.put(key, file)
        return key, sha, size


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


def upload_key(sha256: str) -> str:
    return f"uploads/sha256/{sha256}"


def parsed_key(sha256: str, pipeline: str) -> str:
    return f"parsed/{sha256}/{pipeline}.json"


def parsed_meta_key(sha256: str, pipeline: str) -> str:
    return f"parsed/{sha256}/{pipeline}.meta.json"


def parsed_part_key(sha256: str, pipeline: str, first_page: int, last_page: int) -> str:
    return f"parsed/{sha256}/{pipeline}/pages-{first_page:05d}-{last_page:05d}.json"


def ocr_key(sha256: str, variant: str, pages: list[int]) -> str:
    digest = hashlib.sha256(",".join(map(str, pages)).encode()).hexdigest()[:12]
    return f"parsed/{sha256}/{variant}/ocr-{pages[0]:05d}-{pages[-1]:05d}-{digest}.json"


def password_key(run_id: str) -> str:
    return f"secrets/runs/{run_id}/pdf-password"


def chunks_key(sha256: str, chunk_config: str) -> str:
    return f"chunks/{sha256}/{chunk_config}.json"


def vectors_key(sha256: str, chunk_config: str, model_slug: str) -> str:
    return f"vectors/{sha256}/{chunk_config}-{model_slug}.npy"


def artifact_prefixes(sha256: str) -> list[str]:
    """Everything stored for one content hash: the upload and every step's output."""
    return [f"{kind}/{sha256}/" for kind in ("parsed", "chunks", "vectors", "contexts", "enrich")]
