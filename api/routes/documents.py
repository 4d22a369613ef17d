"""Upload documents (starts a run) and read one document's status."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import unicodedata
import uuid
from pathlib import PurePath
from typing import IO, Annotated, Any

import asyncpg
from fastapi import APIRouter, File, Form, Header, HTTPException, Response, UploadFile, status
from temporalio.service import RPCError

from docindex import repository
from docindex.blobstore import artifact_prefixes, password_key
from docindex.ids import run_workflow_id
from docindex.models import DocStatus, RetryAccepted, RetryRequest
from docindex.runs import retry_run, start_run
from docindex.telemetry import current_trace_id
from docindex.upload_check import RefusedUpload, check_upload
from workflows import names

from ..deps import PrincipalDep, ResourcesDep
from ..live import query_document
from ..schemas import AcceptedDocument, DocumentDetail, UploadAccepted, problems
from .metrics import DOCUMENTS_ACCEPTED, UPLOAD_BYTES, UPLOADS

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/documents", tags=["documents"], responses=problems(404, 409))


def clean_filename(raw: str | None) -> str:
    """Keep only a printable base name; it is shown to people, never used as a path."""
    name = PurePath((raw or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip()
    return name[:255] or "unnamed"


_REFUSALS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every file was already uploaded by this tenant; no run started"},
    413: {"description": "A file, the request or the number of files is over its limit"},
    415: {"description": "A file is a format docindex does not index"},
    422: {"description": "The Idempotency-Key was used before for a different upload"},
    429: {"description": "Rate limit or the tenant's limit of active runs; see Retry-After"},
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses=_REFUSALS,
)
async def upload_documents(
    response: Response,
    res: ResourcesDep,
    principal: PrincipalDep,
    files: list[UploadFile] = File(..., min_length=1, description="One or more files"),
    password: str | None = Form(
        None, description="Password of encrypted PDFs in this upload (kept out of history)"
    ),
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Repeat an upload safely: the same key answers with the first result",
        ),
    ] = None,
) -> UploadAccepted:
    """Store the files durably, then start an IndexingWorkflow over them.

    Files whose bytes this tenant already uploaded are not indexed again: the answer
    names the existing document (``duplicate: true``)."""
    settings = res.settings
    tenant = principal.tenant_id
    if len(files) > settings.max_files_per_request:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(files)} files in one request; the limit is {settings.max_files_per_request}",
        )
    # Check every file before storing any, so a refused request leaves nothing behind.
    digests: list[str] = []
    for upload in files:
        name = clean_filename(upload.filename)
        if upload.size is not None and upload.size > settings.max_upload_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{name}: {upload.size} bytes exceeds the limit of "
                f"{settings.max_upload_bytes} bytes",
            )
        try:
            await asyncio.to_thread(check_upload, upload.file, name, settings.allowed_types)
        except RefusedUpload as exc:
            raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, f"{name}: {exc}") from exc
        digests.append(await asyncio.to_thread(_sha256, upload.file))
    fingerprint = hashlib.sha256("\n".join([*digests, str(bool(password))]).encode()).hexdigest()
    if idempotency_key is not None:
        prior = await repository.run_by_idempotency_key(res.pool, tenant, idempotency_key)
        if prior is not None:
            return await _replay(res, prior, fingerprint, files, digests, tenant)

    existing = await repository.indexed_documents(res.pool, tenant, digests)
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(run_id)
    new: dict[str, repository.NewDocument] = {}
    secret_key = None
    for upload, digest in zip(files, digests, strict=True):
        if digest in existing or digest in new:
            continue
        if password and secret_key is None:
            # In the blob store, not in Postgres rows or workflow history (the UI shows those).
            secret_key = password_key(run_id)
            await res.blobs.put(secret_key, password.encode())
        key, sha256, size = await res.blobs.put_upload(upload.file, digest)
        new[digest] = repository.NewDocument(
            document_id=str(uuid.uuid4()),
            filename=clean_filename(upload.filename),
            sha256=sha256,
            size_bytes=size,
            blob_key=key,
            password_key=secret_key,
        )
    trace_id = current_trace_id()
    if not new:
        if idempotency_key is not None:
            # The same key's first request may have committed since we looked: its
            # documents are what made these duplicates, and its answer is the one owed.
            prior = await repository.run_by_idempotency_key(res.pool, tenant, idempotency_key)
            if prior is not None:
                return await _replay(res, prior, fingerprint, files, digests, tenant)
        response.status_code = status.HTTP_200_OK
        return _answer(None, files, digests, new, existing, trace_id)
    if await repository.active_runs(res.pool, tenant) >= settings.tenant_max_active_runs:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"tenant {tenant} already has {settings.tenant_max_active_runs} runs queued or "
            "running; wait for one to finish",
            headers={"Retry-After": "30"},
        )
    documents = list(new.values())
    try:
        await repository.create_run(
            res.pool,
            run_id,
            workflow_id,
            documents,
            trace_id=trace_id,
            tenant_id=tenant,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
        )
    except asyncpg.UniqueViolationError:
        # The same Idempotency-Key raced us and won: answer as its repeat.
        prior = await repository.run_by_idempotency_key(res.pool, tenant, idempotency_key or "")
        if prior is None:
            raise
        return await _replay(res, prior, fingerprint, files, digests, tenant)
    UPLOADS.inc()
    DOCUMENTS_ACCEPTED.inc(len(documents))
    UPLOAD_BYTES.inc(sum(d.size_bytes for d in documents))
    try:
        await start_run(res.temporal, settings, run_id, len(documents), tenant, principal.key_id)
    except RPCError:
        # The run is recorded and its files are stored: the reconciler starts it once
        # Temporal is back, so the upload is still accepted and nothing is lost.
        log.exception("could not start %s now; it will be resumed", workflow_id)
    return _answer(run_id, files, digests, new, existing, trace_id)


def _sha256(file: IO[bytes]) -> str:
    file.seek(0)
    digest = hashlib.file_digest(file, "sha256").hexdigest()
    file.seek(0)
    return digest


def _answer(
    run_id: str | None,
    files: list[UploadFile],
    digests: list[str],
    new: dict[str, repository.NewDocument],
    existing: dict[str, dict[str, Any]],
    trace_id: str | None,
) -> UploadAccepted:
    """One entry per uploaded file, in upload order."""
    documents: list[AcceptedDocument] = []
    seen: set[str] = set()
    for digest in digests:
        repeat = digest in seen  # the same bytes twice in one upload: indexed once
        seen.add(digest)
        if digest in new and run_id is not None:
            d = new[digest]
            documents.append(
                AcceptedDocument(
                    document_id=d.document_id,
                    run_id=run_id,
                    filename=d.filename,
                    sha256=d.sha256,
                    size_bytes=d.size_bytes,
                    duplicate=repeat,
                )
            )
        elif digest in existing:
            e = existing[digest]
            documents.append(
                AcceptedDocument(
                    document_id=str(e["document_id"]),
                    run_id=str(e["run_id"]),
                    filename=e["filename"],
                    sha256=digest,
                    size_bytes=e["size_bytes"],
                    duplicate=True,
                )
            )
    return UploadAccepted(
        run_id=run_id,
        workflow_id=run_workflow_id(run_id) if run_id else None,
        documents=documents,
        status_url=f"/v1/runs/{run_id}" if run_id else None,
        trace_id=trace_id,
    )


async def _replay(
    res: ResourcesDep,
    prior: dict[str, Any],
    fingerprint: str,
    files: list[UploadFile],
    digests: list[str],
    tenant: str,
) -> UploadAccepted:
    """The answer to a repeated Idempotency-Key: the first upload's, nothing started."""
    if prior["request_fingerprint"] != fingerprint:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "this Idempotency-Key was already used for a different upload",
        )
    run_id = str(prior["run_id"])
    rows = await repository.list_run_documents(res.pool, run_id)
    in_run = {
        r["sha256"]: repository.NewDocument(
            document_id=str(r["document_id"]),
            filename=r["filename"],
            sha256=r["sha256"],
            size_bytes=r["size_bytes"],
            blob_key="",
        )
        for r in rows
    }
    others = await repository.indexed_documents(
        res.pool, tenant, [d for d in digests if d not in in_run]
    )
    answer = _answer(run_id, files, digests, in_run, others, prior["trace_id"])
    answer.replayed = True
    return answer


@router.get("/{document_id}", response_model=DocumentDetail)
async def get_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> DocumentDetail:
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    detail = DocumentDetail(
        document_id=str(row["document_id"]),
        run_id=str(row["run_id"]),
        filename=row["filename"],
        sha256=row["sha256"],
        size_bytes=row["size_bytes"],
        status=DocStatus(row["status"]),
        pages=row["pages"],
        chunk_count=row["chunk_count"],
        error_type=row["error_type"],
        error=row["error"],
        metadata=row["metadata"],
        tokens=row["tokens"],
        cost_usd=row["cost_usd"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
    if not detail.status.terminal:
        live = await query_document(res.temporal, detail.run_id, detail.document_id)
        if live is not None:
            detail.status, detail.step = live.status, live.step
            if live.status.terminal:  # the outcome may not be in Postgres yet
                detail.error_type, detail.error = live.error_type, live.error
            detail.pages = live.pages if live.pages is not None else detail.pages
    return detail


@router.post("/{document_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> dict[str, str]:
    """Cancel one document of a running run; the rest of the run goes on."""
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    if DocStatus(row["status"]).terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the document is already {row['status']}")
    run_handle = res.temporal.get_workflow_handle(run_workflow_id(str(row["run_id"])))
    try:
        await run_handle.signal(names.CANCEL_DOCUMENT_SIGNAL, str(document_id))
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return {"document_id": str(document_id), "status": "cancelling"}


@router.post("/{document_id}/reindex", response_model=RetryAccepted)
async def reindex_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> RetryAccepted:
    """Index one document again, whatever its outcome was (not while it is being indexed).
    Results of steps whose input and configuration did not change are reused."""
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    if not DocStatus(row["status"]).terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, "the document is being indexed")
    run = await repository.get_run(res.pool, str(row["run_id"]))
    assert run is not None
    request = RetryRequest(document_ids=[str(document_id)], include_completed=True)
    try:
        return await retry_run(
            res.temporal,
            res.settings,
            str(row["run_id"]),
            run["document_count"],
            request,
            principal.tenant_id,
        )
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> Response:
    """Delete a document: its row, its chunks (it leaves search at once), and its stored
    file and step artifacts unless another document has the same bytes."""
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    if not DocStatus(row["status"]).terminal:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "the document is being indexed; cancel it first"
        )
    still_shared = await repository.delete_document(res.pool, str(document_id))
    if not still_shared:
        await res.blobs.delete(row["blob_key"])
        for prefix in artifact_prefixes(row["sha256"]):
            await res.blobs.delete_prefix(prefix)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
