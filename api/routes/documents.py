"""Upload documents (starts a run) and read one document's status."""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
import uuid
from pathlib import PurePath

from fastapi import APIRouter, File, Form, HTTPException, Response, UploadFile, status
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from docindex import repository
from docindex.blobstore import artifact_prefixes, password_key
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.models import DocStatus, DocumentProgress, RetryAccepted, RetryRequest
from docindex.runs import retry_run, start_run
from docindex.telemetry import current_trace_id
from workflows import names

from ..deps import ResourcesDep
from ..schemas import AcceptedDocument, DocumentDetail, UploadAccepted
from .metrics import DOCUMENTS_ACCEPTED, UPLOAD_BYTES, UPLOADS

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/documents", tags=["documents"])


def clean_filename(raw: str | None) -> str:
    """Keep only a printable base name; it is shown to people, never used as a path."""
    name = PurePath((raw or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip()
    return name[:255] or "unnamed"


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=UploadAccepted)
async def upload_documents(
    res: ResourcesDep,
    files: list[UploadFile] = File(..., description="One or more files"),
    password: str | None = Form(
        None, description="Password of encrypted PDFs in this upload (kept out of history)"
    ),
) -> UploadAccepted:
    """Store the files durably, then start an IndexingWorkflow over them."""
    settings = res.settings
    run_id = str(uuid.uuid4())
    workflow_id = run_workflow_id(run_id)
    accepted: list[repository.NewDocument] = []
    secret_key = None
    if password:
        # In the blob store, not in Postgres rows or workflow history (the UI shows those).
        secret_key = password_key(run_id)
        await res.blobs.put(secret_key, password.encode())
    for upload in files:
        if upload.size is not None and upload.size > settings.max_upload_bytes:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{upload.filename}: {upload.size} bytes exceeds the limit of "
                f"{settings.max_upload_bytes} bytes",
            )
        key, sha256, size = await res.blobs.put_upload(upload.file)
        accepted.append(
            repository.NewDocument(
                document_id=str(uuid.uuid4()),
                filename=clean_filename(upload.filename),
                sha256=sha256,
                size_bytes=size,
                blob_key=key,
                password_key=secret_key,
            )
        )
    # Blobs first, then rows, then the workflow: whatever the workflow reads already exists.
    UPLOADS.inc()
    DOCUMENTS_ACCEPTED.inc(len(accepted))
    UPLOAD_BYTES.inc(sum(d.size_bytes for d in accepted))
    trace_id = current_trace_id()
    await repository.create_run(res.pool, run_id, workflow_id, accepted, trace_id=trace_id)
    try:
        await start_run(res.temporal, settings, run_id, len(accepted))
    except RPCError:
        # The run is recorded and its files are stored: the reconciler starts it once
        # Temporal is back, so the upload is still accepted and nothing is lost.
        log.exception("could not start %s now; it will be resumed", workflow_id)
    return UploadAccepted(
        run_id=run_id,
        workflow_id=workflow_id,
        documents=[
            AcceptedDocument(
                document_id=d.document_id,
                filename=d.filename,
                sha256=d.sha256,
                size_bytes=d.size_bytes,
            )
            for d in accepted
        ],
        status_url=f"/v1/runs/{run_id}",
        trace_id=trace_id,
    )


@router.get("/{document_id}", response_model=DocumentDetail)
async def get_document(document_id: uuid.UUID, res: ResourcesDep) -> DocumentDetail:
    row = await repository.get_document(res.pool, str(document_id))
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
        live = await _query_document(res, detail.run_id, detail.document_id)
        if live is not None:
            detail.status, detail.step = live.status, live.step
            if live.status.terminal:  # the outcome may not be in Postgres yet
                detail.error_type, detail.error = live.error_type, live.error
            detail.pages = live.pages if live.pages is not None else detail.pages
    return detail


async def _query_document(
    res: ResourcesDep, run_id: str, document_id: str
) -> DocumentProgress | None:
    handle = res.temporal.get_workflow_handle(document_workflow_id(run_id, document_id))
    try:
        return await asyncio.wait_for(
            handle.query(names.STATUS_QUERY, result_type=DocumentProgress), timeout=5
        )
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        return None  # not started yet (still queued in its run)


@router.post("/{document_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_document(document_id: uuid.UUID, res: ResourcesDep) -> dict[str, str]:
    """Cancel one document of a running run; the rest of the run goes on."""
    row = await repository.get_document(res.pool, str(document_id))
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
async def reindex_document(document_id: uuid.UUID, res: ResourcesDep) -> RetryAccepted:
    """Index one document again, whatever its outcome was (not while it is being indexed).
    Results of steps whose input and configuration did not change are reused."""
    row = await repository.get_document(res.pool, str(document_id))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    if not DocStatus(row["status"]).terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, "the document is being indexed")
    run = await repository.get_run(res.pool, str(row["run_id"]))
    assert run is not None
    request = RetryRequest(document_ids=[str(document_id)], include_completed=True)
    try:
        return await retry_run(
            res.temporal, res.settings, str(row["run_id"]), run["document_count"], request
        )
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(document_id: uuid.UUID, res: ResourcesDep) -> Response:
    """Delete a document: its row, its chunks (it leaves search at once), and its stored
    file and step artifacts unless another document has the same bytes."""
    row = await repository.get_document(res.pool, str(document_id))
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
