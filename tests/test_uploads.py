"""What the upload door refuses, what it stores once, and how it counts requests."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client

from docindex.auth import create_api_key
from docindex.blobstore import upload_key
from docindex.config import Settings
from docindex.ids import run_workflow_id
from docindex.spec import resolve_spec

from .conftest import TenantClient
from .helpers import app_with, wait_for_run
from .test_blobstore import bucket_keys, new_bucket

# moto's S3 and the production configuration, as fixtures of this module too.
from .test_blobstore import s3_client as s3_client
from .test_blobstore import s3_endpoint as s3_endpoint
from .test_blobstore import s3_env as s3_env


def text(words: str) -> bytes:
    return f"{words} {uuid.uuid4()}\n".encode() * 10


async def stored(app: Any, data: bytes) -> bool:
    """Whether any tenant has these bytes stored as an upload."""
    suffix = f"/uploads/sha256/{hashlib.sha256(data).hexdigest()}"
    return any(o.key.endswith(suffix) for o in await app.state.resources.blobs.list_objects("t/"))


async def test_limits_are_enforced_before_anything_is_stored(
    settings: Settings, client: Client
) -> None:
    async with app_with(
        settings,
        client,
        max_upload_bytes=2_000,
        max_request_bytes=20_000,
        max_files_per_request=3,
    ) as (app, http):
        big = b"x" * 2_001
        response = await http.post("/v1/documents", files={"files": ("big.txt", big)})
        assert response.status_code == 413 and "big.txt" in response.json()["detail"]
        assert not await stored(app, big)

        # A request over the limit is refused whether it declares its length or not.
        huge = b"y" * 30_000
        response = await http.post("/v1/documents", files={"files": ("huge.txt", huge)})
        assert response.status_code == 413
        assert "request body exceeds" in response.json()["detail"]

        async def chunked() -> AsyncIterator[bytes]:
            # A well-formed multipart file part that never ends, sent without a length.
            yield (
                b'--xyz\r\nContent-Disposition: form-data; name="files"; '
                b'filename="endless.txt"\r\nContent-Type: text/plain\r\n\r\n'
            )
            for _ in range(40):
                yield b"z" * 1_000

        response = await http.post(
            "/v1/documents",
            content=chunked(),
            headers={"Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert response.status_code == 413

        small = [("files", (f"{i}.txt", text(f"file {i}"))) for i in range(4)]
        response = await http.post("/v1/documents", files=small)
        assert response.status_code == 413 and "4 files" in response.json()["detail"]
        assert not any([await stored(app, f[1][1]) for f in small])


async def test_formats_are_judged_by_their_bytes(settings: Settings, client: Client) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("notes.txt", "not an office document")
    refused = {
        "report.pdf": b"\x7fELF\x02\x01\x01" + b"\x00" * 100,  # an executable named .pdf
        "scan.docx": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        "bundle.xlsx": archive.getvalue(),
        "page.txt": b"<!doctype html><html><body>hi</body></html>",  # html is not allowed here
    }
    async with app_with(
        settings, client, allowed_types=["pdf", "docx", "pptx", "xlsx", "md", "txt"]
    ) as (app, http):
        for name, data in refused.items():
            response = await http.post("/v1/documents", files={"files": (name, data)})
            assert response.status_code == 415, (name, response.text)
            assert name in response.json()["detail"]
            assert not await stored(app, data)
        # A mixed request is refused whole: nothing of it is kept.
        fine = text("fine")
        response = await http.post(
            "/v1/documents",
            files=[("files", ("fine.txt", fine)), ("files", ("x.pdf", refused["report.pdf"]))],
        )
        assert response.status_code == 415
        assert not await stored(app, fine)


async def test_damaged_files_are_accepted_and_fail_typed(api: httpx.AsyncClient) -> None:
    """The door refuses foreign formats only; a damaged document is the run's to judge."""
    response = await api.post(
        "/v1/documents",
        files=[
            ("files", ("empty.pdf", b"")),
            ("files", ("ok.txt", text("an ordinary note"))),
        ],
    )
    assert response.status_code == 202
    run = await wait_for_run(api, response.json()["run_id"])
    by_name = {d["filename"]: d for d in run["documents"]}
    assert by_name["empty.pdf"]["status"] == "failed"
    assert by_name["empty.pdf"]["error_type"] == "EmptyDocument"
    assert by_name["ok.txt"]["status"] == "completed"


async def test_file_names_never_become_paths(api: httpx.AsyncClient, settings: Settings) -> None:
    data = text("traversal")
    response = await api.post(
        "/v1/documents", files={"files": ("..\\..\\../etc/pass\u202ewd.txt", data)}
    )
    assert response.status_code == 202
    document = response.json()["documents"][0]
    assert document["filename"] == "passwd.txt"
    row = await api.get(f"/v1/documents/{document['document_id']}")
    assert row.json()["sha256"] == hashlib.sha256(data).hexdigest()
    conn = await asyncpg.connect(settings.database_url)
    try:
        key = await conn.fetchval(
            "SELECT blob_key FROM documents WHERE document_id = $1",
            uuid.UUID(document["document_id"]),
        )
    finally:
        await conn.close()
    assert key == upload_key(api.tenant, hashlib.sha256(data).hexdigest())  # type: ignore[attr-defined]
    await wait_for_run(api, response.json()["run_id"])


async def test_same_bytes_from_the_same_tenant_are_indexed_once(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    data = text("deduplicated minutes of the meeting")
    first = await api.post(
        "/v1/documents",
        files=[("files", ("minutes.txt", data)), ("files", ("copy-of-minutes.txt", data))],
    )
    assert first.status_code == 202
    docs = first.json()["documents"]
    assert docs[0]["document_id"] == docs[1]["document_id"]
    assert [d["duplicate"] for d in docs] == [False, True]
    await wait_for_run(api, first.json()["run_id"])

    again = await api.post("/v1/documents", files={"files": ("renamed.txt", data)})
    assert again.status_code == 200
    body = again.json()
    assert body["run_id"] is None
    assert body["documents"][0]["document_id"] == docs[0]["document_id"]
    assert body["documents"][0]["duplicate"] is True
    conn = await asyncpg.connect(settings.database_url)
    try:
        copies = await conn.fetchval(
            "SELECT count(*) FROM documents WHERE sha256 = $1 AND tenant_id = $2",
            hashlib.sha256(data).hexdigest(),
            api.tenant,  # type: ignore[attr-defined]
        )
    finally:
        await conn.close()
    assert copies == 1


async def test_idempotency_key_answers_a_repeat_with_the_first_result(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    data = text("idempotent upload")
    key = str(uuid.uuid4())
    headers = {"Idempotency-Key": key}

    async def upload(payload: bytes) -> httpx.Response:
        return await api.post("/v1/documents", files={"files": ("a.txt", payload)}, headers=headers)

    # Two at once (a client retrying a timed-out request): one run between them.
    first, second = await asyncio.gather(upload(data), upload(data))
    assert {first.status_code, second.status_code} == {202}
    assert first.json()["run_id"] == second.json()["run_id"]
    assert first.json()["replayed"] != second.json()["replayed"]
    later = await upload(data)
    assert later.json()["run_id"] == first.json()["run_id"] and later.json()["replayed"]
    assert later.json()["documents"] == first.json()["documents"]

    different = await upload(text("something else"))
    assert different.status_code == 422
    assert "different upload" in different.json()["detail"]

    conn = await asyncpg.connect(settings.database_url)
    try:
        runs = await conn.fetchval(
            "SELECT count(*) FROM runs WHERE tenant_id = $1 AND idempotency_key = $2",
            api.tenant,  # type: ignore[attr-defined]
            key,
        )
    finally:
        await conn.close()
    assert runs == 1
    await wait_for_run(api, first.json()["run_id"])


async def test_each_key_has_its_own_rate_limit(settings: Settings, client: Client) -> None:
    async with app_with(settings, client, rate_limit="3/minute") as (app, http):
        for _ in range(3):
            assert (await http.post("/v1/search", json={"query": "q"})).status_code == 200
        refused = await http.post("/v1/search", json={"query": "q"})
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        other = await create_api_key(app.state.resources.pool, f"t-{uuid.uuid4().hex[:8]}")
        response = await http.post(
            "/v1/search", json={"query": "q"}, headers={"Authorization": f"Bearer {other}"}
        )
        assert response.status_code == 200


async def test_a_tenant_over_its_active_run_limit_is_told_to_wait(
    settings: Settings, client: Client, tenant_client: TenantClient
) -> None:
    # Runs go to a queue no worker polls, so the first one stays active.
    async with app_with(
        settings,
        client,
        tenant_max_active_runs=1,
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
    ) as (_, http):
        first = await http.post("/v1/documents", files={"files": ("1.txt", text("one"))})
        assert first.status_code == 202
        second = await http.post("/v1/documents", files={"files": ("2.txt", text("two"))})
        assert second.status_code == 429
        assert second.headers["retry-after"] == "30"
        assert "runs queued or running" in second.json()["detail"]
        # Other tenants are not held back by this one.
        other = await tenant_client()
        elsewhere = await other.post("/v1/documents", files={"files": ("3.txt", text("three"))})
        assert elsewhere.status_code == 202
        await wait_for_run(other, elsewhere.json()["run_id"])
        await client.get_workflow_handle(first.json()["workflow_id"]).terminate("test over")


async def test_uploads_at_once_cannot_both_pass_the_active_run_limit(
    settings: Settings, client: Client
) -> None:
    # The limit is checked and the run recorded in one transaction under the tenant's lock.
    async with app_with(
        settings,
        client,
        tenant_max_active_runs=1,
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
    ) as (_, http):
        responses = await asyncio.gather(
            *(
                http.post("/v1/documents", files={"files": (f"{i}.txt", text(f"racer {i}"))})
                for i in range(4)
            )
        )
        assert sorted(r.status_code for r in responses) == [202, 429, 429, 429]
        for r in responses:
            if r.status_code == 202:
                await client.get_workflow_handle(r.json()["workflow_id"]).terminate("test over")


async def test_a_run_shows_the_pipeline_spec_it_was_recorded_with(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    expected = resolve_spec(settings).shown()
    response = await api.post("/v1/documents", files={"files": ("spec.txt", text("spec"))})
    run_id = response.json()["run_id"]
    while_open = (await api.get(f"/v1/runs/{run_id}")).json()
    closed = await wait_for_run(api, run_id)
    assert while_open["pipeline"] == closed["pipeline"] == expected
    conn = await asyncpg.connect(settings.database_url)
    try:
        digest = await conn.fetchval(
            "SELECT pipeline_digest FROM runs WHERE run_id = $1::uuid", run_id
        )
    finally:
        await conn.close()
    assert digest == expected["digest"]


async def test_uploads_of_one_tenant_at_once_each_keep_their_own_bytes(
    settings: Settings, client: Client
) -> None:
    """Uploads that arrive together are recorded in one transaction: each still gets its
    own run and documents, its bytes stored under their sha256, and two carrying the same
    bytes make one document between them."""
    async with app_with(settings, client, workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}") as (
        app,
        http,
    ):
        uploads = [[text(f"report {i}"), text(f"annex {i}")] for i in range(10)]
        shared = text("the same minutes, sent twice at once")
        uploads += [[shared], [shared]]

        async def send(files: list[bytes]) -> httpx.Response:
            return await http.post(
                "/v1/documents", files=[("files", (f"{i}.txt", d)) for i, d in enumerate(files)]
            )

        responses = await asyncio.gather(*(send(files) for files in uploads))
        runs = {r.json()["run_id"] for r in responses} - {None}
        try:
            assert sorted(r.status_code for r in responses) == [200] + [202] * 11
            blobs = app.state.resources.blobs
            conn = await asyncpg.connect(settings.database_url)
            try:
                for files, response in zip(uploads, responses, strict=True):
                    for data, doc in zip(files, response.json()["documents"], strict=True):
                        row = await conn.fetchrow(
                            "SELECT sha256, size_bytes, blob_key, run_id::text FROM documents"
                            " WHERE document_id = $1::uuid",
                            doc["document_id"],
                        )
                        digest = hashlib.sha256(data).hexdigest()
                        assert row["sha256"] == doc["sha256"] == digest
                        assert row["size_bytes"] == doc["size_bytes"] == len(data)
                        assert await blobs.get(row["blob_key"]) == data
                        assert row["run_id"] == doc["run_id"]
                counts = await conn.fetch(
                    """SELECT document_count,
                              (SELECT array_agg(seq ORDER BY seq) FROM documents d
                               WHERE d.run_id = r.run_id) AS seqs
                       FROM runs r WHERE run_id = ANY($1::uuid[])""",
                    list(runs),
                )
            finally:
                await conn.close()
            assert sorted(c["document_count"] for c in counts) == [1] + [2] * 10
            assert all(c["seqs"] == list(range(c["document_count"])) for c in counts)
            twice = [r.json()["documents"][0] for r in responses[-2:]]
            assert twice[0]["document_id"] == twice[1]["document_id"]
            assert sorted(d["duplicate"] for d in twice) == [False, True]
        finally:
            for run_id in runs:
                await client.get_workflow_handle(run_workflow_id(run_id)).terminate("test over")


def _multipart(boundary: str, filename: str) -> tuple[bytes, bytes]:
    """The head of one file part and the body's end, around the file's bytes."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


async def _form_field(http: httpx.AsyncClient, name: str) -> httpx.Response:
    """An upload whose only part is a plain form field called ``name``."""
    part = f'--f\r\nContent-Disposition: form-data; name="{name}"\r\n\r\nx\r\n--f--\r\n'
    return await http.post(
        "/v1/documents",
        content=part.encode(),
        headers={"Content-Type": "multipart/form-data; boundary=f"},
    )


def _staged(root: Path) -> list[Path]:
    """What the blob store holds of uploads still being received."""
    return [p for p in root.rglob("*") if p.is_file() and "incoming" in p.parts]


async def test_a_big_file_streams_into_the_store_as_it_arrives_and_is_hashed_once(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    """Past 1 MiB a file part is written to the blob store while the request is still
    coming in (not spooled, then read back to hash and store), and so is every file once
    the request holds its memory budget (here none: a small note first); once the body has
    ended and the files passed their checks they are the tenant's uploads, with the digest
    of every byte that came, and nothing staged is left."""
    blob_dir = tmp_path / "blobs"
    note = f"# A short note {uuid.uuid4()}\n".encode()
    line = b"a line of a long plain-text export, numbered and timestamped\n"
    data = line * (12 * 1024 * 1024 // len(line)) + f"{uuid.uuid4()}\n".encode()
    note_head, _ = _multipart("stream", "note.md")
    head, tail = _multipart("stream", "export.txt")
    staged_while_sending: list[list[int]] = []

    async def body() -> AsyncIterator[bytes]:
        yield note_head + note + b"\r\n" + head
        piece = 64 * 1024
        for at in range(0, len(data), piece):
            if at == 11 * 1024 * 1024:
                await asyncio.sleep(0.2)  # let the server catch up with what it was sent
                staged_while_sending.append(sorted(p.stat().st_size for p in _staged(blob_dir)))
            yield data[at : at + piece]
        yield tail

    async with app_with(
        settings,
        client,
        blob_url=blob_dir.as_uri(),
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
        upload_memory_bytes=0,
    ) as (app, http):
        response = await http.post(
            "/v1/documents",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=stream"},
        )
        assert response.status_code == 202, response.text
        documents = response.json()["documents"]
        await client.get_workflow_handle(response.json()["workflow_id"]).terminate("test over")
        tenant = await app.state.resources.pool.fetchval(
            "SELECT tenant_id FROM documents WHERE document_id = $1::uuid",
            documents[0]["document_id"],
        )
        blobs = app.state.resources.blobs
        stored_bytes = [
            await blobs.get(upload_key(tenant, hashlib.sha256(each).hexdigest()))
            for each in (note, data)
        ]
    # The note whole, and two of the store's 5 MiB parts of the export, before the end.
    note_staged, export_staged = staged_while_sending[0]
    assert note_staged == len(note) and export_staged >= 10 * 1024 * 1024
    assert [d["sha256"] for d in documents] == [
        hashlib.sha256(each).hexdigest() for each in (note, data)
    ]
    assert [d["size_bytes"] for d in documents] == [len(note), len(data)]
    assert stored_bytes == [note, data]
    assert _staged(blob_dir) == []


async def test_big_files_are_judged_from_the_store_and_refused_ones_leave_nothing(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    """A big file is checked where it was streamed (a ZIP's directory read back in ranges,
    text scanned to its last byte as it came); refused, or cut off before its end, it
    leaves no byte in the store."""
    blob_dir = tmp_path / "blobs"
    filler = hashlib.sha256(uuid.uuid4().bytes).digest() * (3 * 1024 * 1024 // 32)

    def archive(*members: str) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name in members:
                z.writestr(name, filler if name.endswith(".bin") else "<w:document/>")
        return out.getvalue()

    office = archive("[Content_Types].xml", "word/document.xml", "word/media/image1.bin")
    not_office = archive("notes/readme.txt", "data/blob.bin")
    text_then_binary = b"words\n" * (2 * 1024 * 1024 // 6) + b"\x00\x01binary"
    async with app_with(
        settings,
        client,
        blob_url=blob_dir.as_uri(),
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
    ) as (app, http):
        for name, data in (("bundle.docx", not_office), ("log.txt", text_then_binary)):
            response = await http.post("/v1/documents", files={"files": (name, data)})
            assert response.status_code == 415, (name, response.text)
            assert response.json()["detail"].startswith(f"{name}: ")
        assert [p for p in blob_dir.rglob("*") if p.is_file()] == []

        # Cut off in the middle of a big file: no closing boundary, nothing kept.
        head, _ = _multipart("cut", "cut.txt")
        response = await http.post(
            "/v1/documents",
            content=head + b"x" * (7 * 1024 * 1024),
            headers={"Content-Type": "multipart/form-data; boundary=cut"},
        )
        assert response.status_code == 400, response.text
        assert [p for p in blob_dir.rglob("*") if p.is_file()] == []
        # A form with no file in it is told what is missing, in the framework's shape.
        response = await _form_field(http, "password")
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "files"]
        # A file where the password goes, or a field where files go: told which, and
        # nothing kept.
        response = await http.post(
            "/v1/documents",
            files=[("files", ("a.txt", b"words")), ("password", ("p.txt", b"secret"))],
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "password"]
        response = await _form_field(http, "files")
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "files"]
        # Not multipart at all.
        response = await http.post("/v1/documents", data={"files": "report.txt"})
        assert response.status_code == 400, response.text

        response = await http.post("/v1/documents", files={"files": ("report.docx", office)})
        assert response.status_code == 202, response.text
        await client.get_workflow_handle(response.json()["workflow_id"]).terminate("test over")
        stored_keys = [o.key for o in await app.state.resources.blobs.list_objects()]
    assert len(stored_keys) == 1 and stored_keys[0].endswith(hashlib.sha256(office).hexdigest())
    assert _staged(blob_dir) == []


async def test_big_files_stream_into_s3_and_are_copied_into_place_there(
    settings: Settings, client: Client, s3_client: Any, s3_env: None
) -> None:
    """The same path on S3 (moto, configured as production configures MinIO): a big part
    is a multipart upload while the body comes, a ZIP's directory is read back in ranges,
    the checked part is copied server-side to its content key, and nothing staged stays."""
    bucket = new_bucket(s3_client)
    filler = hashlib.sha256(uuid.uuid4().bytes).digest() * (7 * 1024 * 1024 // 32)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", "<w:document/>")
        z.writestr("word/media/image1.bin", filler)
    office = archive.getvalue()
    export = b"an exported line of text\n" * (2 * 1024 * 1024 // 25)
    async with app_with(
        settings,
        client,
        blob_url=f"s3://{bucket}/blobs",
        workflow_task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
    ) as (app, http):
        response = await http.post(
            "/v1/documents",
            files=[("files", ("report.docx", office)), ("files", ("export.txt", export))],
        )
        assert response.status_code == 202, response.text
        await client.get_workflow_handle(response.json()["workflow_id"]).terminate("test over")
        blobs = app.state.resources.blobs
        tenant = await app.state.resources.pool.fetchval(
            "SELECT tenant_id FROM documents WHERE document_id = $1::uuid",
            response.json()["documents"][0]["document_id"],
        )
        for data in (office, export):
            assert await blobs.get(upload_key(tenant, hashlib.sha256(data).hexdigest())) == data
    keys = bucket_keys(s3_client, bucket)
    assert len(keys) == 2 and not [k for k in keys if "/incoming/" in k], keys
