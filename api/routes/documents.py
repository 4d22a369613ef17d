"""Upload documents (starts a run) and read one document's status."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Header,
    HTTPException,
    Query,
    Request,
    Response,
    status,
)
from temporalio.service import RPCError

from docindex import gc, repository
from docindex.api_models import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX
from docindex.ids import run_workflow_id
from docindex.models import DocStatus, RetryRequest
from workflows import names
from workflows.indexing_contract import RetryAccepted
from workflows.starter import retry_run

from ..deps import PrincipalDep, ResourcesDep
from ..live import query_document
from ..schemas import (
    DocumentDetail,
    DocumentItem,
    DocumentPage,
    Problem,
    UploadAccepted,
    invalid,
    problems,
)
from ..services import incoming, uploads

router = APIRouter(prefix="/v1/documents", tags=["documents"], responses=problems(404, 409))


_REFUSALS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every file was already uploaded by this tenant; no run started"},
    400: {
        "model": Problem,
        "description": "The body is not a well-formed multipart/form-data upload",
    },
    413: {
        "description": "A file, the request or the number of files is over its limit, or the "
        "tenant's storage quota"
    },
    415: {"description": "A file is a format docindex does not index"},
    422: {"description": "The Idempotency-Key was used before for a different upload"},
    429: {
        "description": "Rate limit, or the tenant's limit of active runs or documents in "
        "flight; see Retry-After"
    },
}


# The body is read by the route itself (api/services/incoming.py), so the framework does not
# spool it; this is the schema the framework would give a ``list[UploadFile]`` and a form
# field, for clients and the docs.
_UPLOAD_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "title": "Upload",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "minItems": 1,
                        "title": "Files",
                        "description": "One or more files",
                        "items": {"type": "string", "format": "binary"},
                    },
                    "password": {
                        "type": "string",
                        "title": "Password",
                        "description": "Password of encrypted PDFs in this upload "
                        "(kept out of history)",
                    },
                },
            }
        }
    },
}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadAccepted,
    responses=_REFUSALS,
    openapi_extra={"requestBody": _UPLOAD_BODY},
)
async def upload_documents(
    request: Request,
    response: Response,
    res: ResourcesDep,
    principal: PrincipalDep,
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
    received: incoming.ReceivedUpload | None = None
    try:
        received = await incoming.receive_upload(
            request.stream(),
            request.headers.get("content-type"),
            settings=res.settings,
            blobs=res.blobs,
            tenant=principal.tenant_id,
        )
        answer = await uploads.upload_documents(
            res, principal, received, idempotency_key=idempotency_key
        )
    except incoming.NotAFormField as exc:
        raise invalid(exc.where, str(exc)) from exc
    except uploads.UploadRefused as exc:
        raise _http_error(exc, body_read=received is not None) from exc
    finally:
        if received is not None:
            # Copied into place, or refused: a staged part is never needed again.
            await asyncio.shield(received.discard(res.blobs))
    if answer.run_id is None:
        response.status_code = status.HTTP_200_OK
    return answer


_REFUSED_STATUS: dict[type[uploads.UploadRefused], int] = {
    uploads.MalformedUpload: status.HTTP_400_BAD_REQUEST,
    uploads.TooManyFiles: status.HTTP_413_CONTENT_TOO_LARGE,
    uploads.FileTooLarge: status.HTTP_413_CONTENT_TOO_LARGE,
    uploads.UnsupportedFile: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    uploads.IdempotencyKeyReused: status.HTTP_422_UNPROCESSABLE_CONTENT,
    uploads.TooManyActiveRuns: status.HTTP_429_TOO_MANY_REQUESTS,
    uploads.TooManyDocumentsInFlight: status.HTTP_429_TOO_MANY_REQUESTS,
    uploads.StorageQuotaExceeded: status.HTTP_413_CONTENT_TOO_LARGE,
}


def _http_error(exc: uploads.UploadRefused, *, body_read: bool) -> HTTPException:
    retry_after_s = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else {}
    if not body_read:
        # Refused part way through the body: the rest is never read, so the connection
        # cannot carry another request.
        headers["Connection"] = "close"
    return HTTPException(_REFUSED_STATUS[type(exc)], str(exc), headers=headers or None)


@router.get("", response_model=DocumentPage)
async def list_documents(
    res: ResourcesDep,
    principal: PrincipalDep,
    status_: Annotated[DocStatus | None, Query(alias="status")] = None,
    run_id: uuid.UUID | None = None,
    filename: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=255,
            description="A glob as search takes it (*, ?, [abc], [!abc]); case-insensitive",
        ),
    ] = None,
    created_after: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> DocumentPage:
    """This tenant's documents, newest first, a page at a time. Statuses are as recorded
    (``GET /v1/documents/{id}`` has live progress); pages stay consistent while uploads
    arrive: later uploads come before the first page, never into later ones."""
    try:
        after = repository.Position.from_cursor("documents", cursor) if cursor else None
    except ValueError as exc:
        raise invalid(("query", "cursor"), str(exc), cursor) from exc
    try:
        if filename is not None:
            repository.filename_regex(filename)
    except ValueError as exc:
        raise invalid(("query", "filename"), str(exc), filename) from exc
    if created_after is not None and created_after.tzinfo is None:
        raise invalid(
            ("query", "created_after"),
            "created_after needs a time zone (Z or +hh:mm)",
            str(created_after),
        )
    rows = await repository.list_documents(
        res.pool,
        principal.tenant_id,
        status=status_,
        run_id=str(run_id) if run_id else None,
        filename=filename,
        created_after=created_after,
        after=after,
        limit=limit,
    )
    last = rows[-1] if len(rows) == limit else None
    return DocumentPage(
        documents=[DocumentItem.model_validate(r) for r in rows],
        next_cursor=repository.Position(last.created_at, last.document_id).cursor("documents")
        if last
        else None,
    )


@router.get("/{document_id}", response_model=DocumentDetail)
async def get_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> DocumentDetail:
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    detail = DocumentDetail.model_validate(row)
    if not detail.status.terminal:
        live = await query_document(res.temporal, detail.run_id, detail.document_id)
        if live is not None:
            detail.status, detail.step = live.status, live.step
            if live.status.terminal:  # the outcome may not be in Postgres yet
                detail.error_type, detail.error = live.error_type, live.error
            detail.pages = live.pages if live.pages is not None else detail.pages
            detail.ocr_pages, detail.ocr_pages_done = live.ocr_pages, live.ocr_pages_done
            detail.warning = live.warning or detail.warning
    return detail


@router.post("/{document_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> dict[str, str]:
    """Cancel one document of a running run; the rest of the run goes on."""
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    if row.status.terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the document is already {row.status}")
    # Recorded first: the run skips it even after it continued-as-new or is retrying it.
    await repository.cancel_queued_document(res.pool, str(document_id))
    run_handle = res.temporal.get_workflow_handle(run_workflow_id(row.run_id))
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
    if not row.status.terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, "the document is being indexed")
    run = await repository.get_run(res.pool, row.run_id)
    assert run is not None
    request = RetryRequest(document_ids=[str(document_id)], include_completed=True)
    try:
        return await retry_run(
            res.temporal,
            res.settings,
            row.run_id,
            run.document_count,
            request,
            principal.tenant_id,
            spec=run.pipeline,
            generation_id=run.generation_id,
        )
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


@router.delete("/{document_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(
    document_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> Response:
    """Delete a document: its row, its chunks (it leaves search at once), its PDF password,
    and its stored file and step artifacts unless another document of the tenant has the
    same bytes (docindex/gc.py)."""
    row = await repository.get_document(res.pool, str(document_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such document")
    if not row.status.terminal:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "the document is being indexed; cancel it first"
        )
    await gc.delete_documents(res.pool, res.blobs, principal.tenant_id, [str(document_id)])
    return Response(status_code=status.HTTP_204_NO_CONTENT)
