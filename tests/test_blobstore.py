"""BlobStore against both backends: the local default directory and a real S3 API.

The S3 side is moto's server, run in-process on a free 127.0.0.1 port, and the store is
configured the way production configures MinIO (docker-compose.temporal.yml): only the standard
``AWS_*`` environment variables plus an ``s3://<bucket>/<prefix>`` URL. Nothing here uses the
Temporal/Postgres session fixtures of conftest.py.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from docindex.blobstore import BlobStore, upload_key

ACCESS_KEY = "docindex-test-key"
SECRET_KEY = "docindex-test-secret"
REGION = "us-east-1"
# Above obstore's default 5 MiB chunk size, so the upload goes through S3 multipart.
LARGE = 12 * 1024 * 1024 + 123


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> Any:
    # Explicit arguments, not the environment: the tests set AWS_* only for obstore.
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The production configuration: standard env vars only, nothing passed in code."""
    for name in (
        "AWS_ENDPOINT_URL_S3",  # would take precedence over AWS_ENDPOINT_URL
        "AWS_ENDPOINT",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ALLOW_HTTP", "true")


def new_bucket(s3_client: Any) -> str:
    """A fresh bucket per test, so content-addressed keys never collide across tests."""
    bucket = f"docindex-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=bucket)
    return bucket


def bucket_keys(s3_client: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def dir_keys(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
        for dirpath, _, names in os.walk(root)
        for name in names
    )


@dataclass
class Case:
    blobs: BlobStore
    # Every object physically stored, as keys relative to the store's root/prefix.
    stored_keys: Callable[[], list[str]]


@pytest.fixture(params=["local", "s3"])
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    root = tmp_path / "blobs"
    if request.param == "local":
        return Case(BlobStore(None, root), lambda: dir_keys(root))
    s3_client = request.getfixturevalue("s3_client")
    request.getfixturevalue("s3_env")
    bucket = new_bucket(s3_client)
    blobs = BlobStore(f"s3://{bucket}/blobs", root)

    def stored_keys() -> list[str]:
        keys = bucket_keys(s3_client, bucket)
        assert all(key.startswith("blobs/") for key in keys), keys
        return [key.removeprefix("blobs/") for key in keys]

    return Case(blobs, stored_keys)


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes, so a misplaced or dropped part changes the hash."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


async def test_put_get_bytes(case: Case) -> None:
    await case.blobs.put("one.bin", b"hello blob")
    assert await case.blobs.get("one.bin") == b"hello blob"
    assert case.stored_keys() == ["one.bin"]


async def test_put_get_file_objects(case: Case, tmp_path: Path) -> None:
    data = payload(70_000, seed=1)
    await case.blobs.put("from-bytesio.bin", io.BytesIO(data))
    source = tmp_path / "source.bin"
    source.write_bytes(data[::-1])
    with source.open("rb") as handle:
        await case.blobs.put("from-file.bin", handle)
    assert await case.blobs.get("from-bytesio.bin") == data
    assert await case.blobs.get("from-file.bin") == data[::-1]


async def test_exists_and_delete(case: Case) -> None:
    assert not await case.blobs.exists("x/y.bin")
    await case.blobs.put("x/y.bin", b"y")
    assert await case.blobs.exists("x/y.bin")
    await case.blobs.delete("x/y.bin")
    assert not await case.blobs.exists("x/y.bin")
    assert case.stored_keys() == []


async def test_nested_keys(case: Case) -> None:
    keys = ["a/b/c/d.json", "a/b/e.json", "a/f.json", "parsed/abc/pipe/pages-00001-00010.json"]
    for index, key in enumerate(keys):
        await case.blobs.put(key, f"value {index}".encode())
    for index, key in enumerate(keys):
        assert await case.blobs.exists(key)
        assert await case.blobs.get(key) == f"value {index}".encode()
    assert not await case.blobs.exists("a/b")  # a "directory" is not an object
    assert case.stored_keys() == sorted(keys)


async def test_put_upload_is_content_addressed(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    real_put = case.blobs.put

    async def counting_put(key: str, data: Any) -> None:
        writes.append(key)
        await real_put(key, data)

    monkeypatch.setattr(case.blobs, "put", counting_put)

    first = payload(10_000, seed=2)
    second = payload(10_000, seed=3)
    key1, sha1, size1 = await case.blobs.put_upload("acme", io.BytesIO(first))
    assert sha1 == hashlib.sha256(first).hexdigest()
    assert size1 == len(first)
    assert key1 == upload_key("acme", sha1) == f"t/acme/uploads/sha256/{sha1}"

    # Same bytes again, from a handle that is not at position 0: same key, no second write.
    again = io.BytesIO(first)
    again.seek(1234)
    assert await case.blobs.put_upload("acme", again) == (key1, sha1, size1)
    assert writes == [key1]

    key2, sha2, size2 = await case.blobs.put_upload("acme", io.BytesIO(second))
    assert (sha2, size2) == (hashlib.sha256(second).hexdigest(), len(second))
    assert key2 != key1
    assert writes == [key1, key2]

    assert case.stored_keys() == sorted([key1, key2])
    assert await case.blobs.get(key1) == first
    assert await case.blobs.get(key2) == second


async def test_large_upload_round_trips(case: Case) -> None:
    data = payload(LARGE, seed=4)
    key, sha, size = await case.blobs.put_upload("acme", io.BytesIO(data))
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), LARGE)
    got = await case.blobs.get(key)
    assert len(got) == LARGE
    assert hashlib.sha256(got).hexdigest() == sha

    await case.blobs.put("large/as-bytes.bin", data)
    assert hashlib.sha256(await case.blobs.get("large/as-bytes.bin")).hexdigest() == sha


async def test_missing_object_raises_file_not_found(case: Case) -> None:
    # obstore raises the built-in FileNotFoundError for both backends (its own NotFoundError
    # is deprecated and no longer emitted); BlobStore.get lets it through.
    with pytest.raises(FileNotFoundError):
        await case.blobs.get("no/such/key.bin")


async def test_large_s3_upload_is_multipart(s3_client: Any, s3_env: None, tmp_path: Path) -> None:
    bucket = new_bucket(s3_client)
    blobs = BlobStore(f"s3://{bucket}/blobs", tmp_path)
    key, _, _ = await blobs.put_upload("acme", io.BytesIO(payload(LARGE, seed=5)))
    head = s3_client.head_object(Bucket=bucket, Key=f"blobs/{key}")
    assert head["ContentLength"] == LARGE
    # A multipart object's ETag is "<md5 of part md5s>-<part count>": 12 MiB / 5 MiB -> 3 parts.
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]


async def test_s3_url_prefix_scopes_objects(s3_client: Any, s3_env: None, tmp_path: Path) -> None:
    bucket = new_bucket(s3_client)
    s3_client.put_object(Bucket=bucket, Key="outside.txt", Body=b"not ours")
    s3_client.put_object(Bucket=bucket, Key="some/other/x.txt", Body=b"not ours")

    blobs = BlobStore(f"s3://{bucket}/some/prefix", tmp_path)
    assert blobs.url == f"s3://{bucket}/some/prefix"
    await blobs.put("nested/key.bin", b"inside")
    key, _, _ = await blobs.put_upload("acme", io.BytesIO(b"upload"))

    assert bucket_keys(s3_client, bucket) == sorted(
        [
            "outside.txt",
            "some/other/x.txt",
            "some/prefix/nested/key.bin",
            f"some/prefix/{key}",
        ]
    )
    body = s3_client.get_object(Bucket=bucket, Key="some/prefix/nested/key.bin")["Body"].read()
    assert body == b"inside"
    # Objects outside the prefix are invisible through the store.
    assert not await blobs.exists("outside.txt")
    # and cannot be reached by climbing out: obstore rejects ".." segments outright.
    with pytest.raises(ValueError, match=r"\.\."):
        await blobs.exists("../other/x.txt")
    await blobs.delete("nested/key.bin")
    assert "some/prefix/nested/key.bin" not in bucket_keys(s3_client, bucket)


async def test_s3_config_comes_from_env(
    s3_client: Any, s3_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The env vars really are what reaches the server: without AWS_ALLOW_HTTP, http is refused."""
    bucket = new_bucket(s3_client)
    monkeypatch.delenv("AWS_ALLOW_HTTP")
    blobs = BlobStore(f"s3://{bucket}/blobs", tmp_path)
    with pytest.raises(Exception, match=r"(?i)scheme|http"):
        await blobs.put("k", b"v")
    assert bucket_keys(s3_client, bucket) == []


async def test_a_streamed_write_becomes_an_object_when_closed_and_copies_only_if_new(
    case: Case,
) -> None:
    """What an upload's big file part goes through (api/services/incoming.py): written in
    parts as it arrives, visible once closed, read back in ranges as a seekable file, and
    copied to its content key unless that is there already; on S3 a multipart upload."""
    data = payload(LARGE, seed=7)
    writer = case.blobs.open_writer("incoming/part", 5 * 1024 * 1024)
    for at in range(0, len(data), 1024 * 1024):
        await writer.write(data[at : at + 1024 * 1024])
    assert not await case.blobs.exists("incoming/part")
    await writer.close()
    assert await case.blobs.get("incoming/part") == data

    with case.blobs.open_reader("incoming/part") as file:
        file.seek(-100, io.SEEK_END)
        assert file.read() == data[-100:]
        file.seek(5 * 1024 * 1024 - 10)
        assert file.read(20) == data[5 * 1024 * 1024 - 10 : 5 * 1024 * 1024 + 10]

    assert await case.blobs.copy_new("incoming/part", "uploads/one")
    await case.blobs.put("uploads/two", b"already stored")
    assert not await case.blobs.copy_new("incoming/part", "uploads/two")
    assert await case.blobs.get("uploads/two") == b"already stored"
    await case.blobs.copy("incoming/part", "uploads/two")
    await case.blobs.delete("incoming/part")
    assert await case.blobs.get("uploads/one") == data
    assert await case.blobs.get("uploads/two") == data
    assert case.stored_keys() == ["uploads/one", "uploads/two"]
