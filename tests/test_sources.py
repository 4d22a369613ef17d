"""Sources that sync themselves, against a real folder and moto's S3 (server mode, reached
through the standard AWS_* variables only), with the session's Temporal, Postgres and
workers: the first sync indexes what matches, a changed object is indexed again without
leaving search, a deleted one's document goes, an S3 event syncs a key at once, DELETE
stops the schedule."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from docindex.config import Settings
from workflows.source_contract import source_schedule_id

from .test_blobstore import new_bucket, s3_client, s3_endpoint, s3_env  # noqa: F401

pytestmark = pytest.mark.usefixtures("workers")


def note(topic: str, marker: str) -> bytes:
    """A small text document whose words only this test uses."""
    return (
        f"Field notes on {topic}, series {marker}. The {topic} was observed at dawn near "
        f"the river crossing; the notes record its colour, size and behaviour.\n"
    ).encode() * 8


async def wait_source(
    http: httpx.AsyncClient,
    source_id: str,
    done: Callable[[dict[str, Any]], bool],
    limit_s: float = 60.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await http.get(f"/v1/sources/{source_id}")
        response.raise_for_status()
        body = response.json()
        if done(body):
            return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"source {source_id} did not get there in {limit_s}s: {body}")


async def hits(http: httpx.AsyncClient, query: str) -> dict[str, str]:
    """filename -> document_id of the documents the query finds."""
    response = await http.post("/v1/search", json={"query": query, "top_k": 20})
    response.raise_for_status()
    return {h["filename"]: h["document_id"] for h in response.json()["results"]}


def synced(objects: int, indexed: int) -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        return (
            body["synced_as_of"] is not None
            and body["objects"] == objects
            and body["indexed"] == indexed
            and body["pending"] == 0
        )

    return check


async def test_a_folder_source_indexes_reindexes_and_removes(
    api: httpx.AsyncClient, settings: Settings, client: Client
) -> None:
    assert settings.source_file_root is not None
    folder = settings.source_file_root / uuid.uuid4().hex
    folder.mkdir(parents=True)
    marker = uuid.uuid4().hex[:8]
    (folder / "heron.txt").write_bytes(note("heron", marker))
    (folder / "sub").mkdir()
    (folder / "sub" / "otter.txt").write_bytes(note("otter", marker))
    (folder / "beaver.md").write_bytes(note("beaver", marker))  # not included

    # A tenant cannot name a folder outside the allowed root.
    outside = await api.post("/v1/sources", json={"url": "file:///etc/", "interval_s": 3600})
    assert outside.status_code == 422, outside.text

    created = await api.post(
        "/v1/sources",
        json={"url": folder.as_uri() + "/", "interval_s": 3600, "include": ["*.txt"]},
    )
    assert created.status_code == 201, created.text
    source_id = created.json()["source_id"]
    await wait_source(api, source_id, synced(objects=2, indexed=2))
    found = await hits(api, f"heron otter beaver field notes series {marker}")
    assert {"heron.txt", "otter.txt"} <= set(found) and "beaver.md" not in found
    heron, otter = found["heron.txt"], found["otter.txt"]
    first_sha256 = (await api.get(f"/v1/documents/{heron}")).json()["sha256"]

    # heron changes, otter goes; a sync reindexes one and removes the other.
    (folder / "heron.txt").write_bytes(note("heron", marker) + b"A grey heron, later.\n" * 3)
    (folder / "sub" / "otter.txt").unlink()
    assert (await api.post(f"/v1/sources/{source_id}/sync")).status_code == 202
    deadline = time.monotonic() + 60
    while True:
        # Never a gap: the old chunks are served until the new ones replace them.
        assert (await hits(api, f"heron field notes {marker}")).get("heron.txt") == heron
        body = (await api.get(f"/v1/sources/{source_id}")).json()
        document = (await api.get(f"/v1/documents/{heron}")).json()
        if synced(objects=1, indexed=1)(body) and document["sha256"] != first_sha256:
            break
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.3)
    assert (await api.get(f"/v1/documents/{otter}")).status_code == 404
    assert "grey heron" in json.dumps(
        (await api.post("/v1/search", json={"query": "grey heron later", "top_k": 5})).json()
    )

    # DELETE stops the schedule and the workflow; the documents stay.
    assert (await api.delete(f"/v1/sources/{source_id}")).status_code == 202
    with pytest.raises(RPCError):
        await client.get_schedule_handle(source_schedule_id(source_id)).describe()
    assert (await api.get(f"/v1/sources/{source_id}")).json()["status"] == "stopped"
    assert (await api.post(f"/v1/sources/{source_id}/sync")).status_code == 409
    assert (await api.get(f"/v1/documents/{heron}")).status_code == 200


def s3_event(name: str, bucket: str, key: str) -> dict[str, Any]:
    """An S3 event notification as S3 and MinIO post it (keys URL-encoded)."""
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": name,
                "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key)}},
            }
        ]
    }


@pytest.mark.usefixtures("s3_env")
async def test_an_s3_source_follows_events_and_purges(
    api: httpx.AsyncClient,
    s3_client: Any,  # noqa: F811
    tenant_client: Any,
) -> None:
    bucket = new_bucket(s3_client)
    marker = uuid.uuid4().hex[:8]
    s3_client.put_object(Bucket=bucket, Key="docs/crane.txt", Body=note("crane", marker))
    s3_client.put_object(Bucket=bucket, Key="docs/a b/ibis.txt", Body=note("ibis", marker))
    s3_client.put_object(Bucket=bucket, Key="other/stork.txt", Body=note("stork", marker))
    created = await api.post(
        "/v1/sources", json={"url": f"s3://{bucket}/docs/", "interval_s": 3600}
    )
    assert created.status_code == 201, created.text
    source_id = created.json()["source_id"]
    await wait_source(api, source_id, synced(objects=2, indexed=2))
    assert set(await hits(api, f"crane ibis stork field notes {marker}")) == {
        "crane.txt",
        "ibis.txt",
    }

    # Another tenant reaches nothing of it.
    bob = await tenant_client()
    assert (await bob.get(f"/v1/sources/{source_id}")).status_code == 404
    assert (await bob.get("/v1/sources")).json()["sources"] == []

    # A new object, named by an event, is indexed at once (no sync is due for an hour).
    s3_client.put_object(Bucket=bucket, Key="docs/egret.txt", Body=note("egret", marker))
    event = s3_event("s3:ObjectCreated:Put", bucket, "docs/egret.txt")
    accepted = await api.post(f"/v1/sources/{source_id}/events", json=event)
    assert accepted.status_code == 202 and accepted.json() == {"keys": 1, "ignored": 0}
    await wait_source(api, source_id, lambda b: b["objects"] == 3 and b["indexed"] == 3)
    # One removed, named by an event (its key has a space, URL-encoded as S3 sends it).
    s3_client.delete_object(Bucket=bucket, Key="docs/a b/ibis.txt")
    removed = s3_event("s3:ObjectRemoved:Delete", bucket, "docs/a b/ibis.txt")
    other = s3_event("s3:ObjectCreated:Put", "someone-elses-bucket", "docs/x.txt")
    removed["Records"] += other["Records"]
    accepted = await api.post(f"/v1/sources/{source_id}/events", json=removed)
    assert accepted.json() == {"keys": 1, "ignored": 1}
    await wait_source(api, source_id, lambda b: b["objects"] == 2 and b["indexed"] == 2)
    assert set(await hits(api, f"crane ibis egret field notes {marker}")) == {
        "crane.txt",
        "egret.txt",
    }
    bad = await api.post(f"/v1/sources/{source_id}/events", json={"records": []})
    assert bad.status_code == 422

    # Stopped with purge: its documents go too.
    assert (await api.delete(f"/v1/sources/{source_id}?purge=true")).status_code == 202
    deadline = time.monotonic() + 30
    while await hits(api, f"crane egret field notes {marker}"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)


def test_source_urls_are_confined(tmp_path: Path) -> None:
    from docindex.sources import InvalidSource, included, parse_source_url

    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    assert parse_source_url((root / "in").as_uri(), root).folder == (root / "in").resolve()
    for url, allowed in (
        ((root / "in").as_uri(), None),  # no root configured: no file:// at all
        ((tmp_path / "out").as_uri(), root),
        (f"file://{root}/in/../../out", root),
        ("s3://user:secret@bucket/p/", root),
        ("s3://bucket/p/?X-Amz-Credential=x", root),
        ("http://example.com/p/", root),
    ):
        with pytest.raises(InvalidSource):
            parse_source_url(url, allowed)
    assert parse_source_url("s3://bucket/docs", None).prefix == "docs/"
    assert included("a/b/report.pdf", ["*.pdf"]) and not included("a.txt", ["*.pdf"])
