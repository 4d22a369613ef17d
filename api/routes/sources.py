"""Sources that sync themselves: a prefix of a bucket or a folder, indexed as it changes."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from fastapi import APIRouter, HTTPException, Query, Request, status
from pydantic import BaseModel, Field
from temporalio.service import RPCError

from docindex.repository import sources as repo
from docindex.repository.sources import SourceRow
from docindex.sources import InvalidSource

from ..deps import PrincipalDep, ResourcesDep
from ..schemas import invalid, problems
from ..services import sources as service

router = APIRouter(prefix="/v1/sources", tags=["sources"], responses=problems(404, 409))


class NewSource(BaseModel):
    url: str = Field(
        min_length=6,
        max_length=2000,
        description="s3://bucket/prefix/ (credentials from the server's environment) or "
        "file:///folder/ under the server's allowed root",
    )
    interval_s: float = Field(default=300.0, description="How often it is listed")
    include: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="Glob patterns of keys (relative to the prefix) to index, e.g. "
        '["*.pdf"]; none = every object',
    )


class SourceStatus(BaseModel):
    source_id: str
    url: str
    include: list[str]
    interval_s: float
    status: str  # active | stopped
    synced_as_of: datetime | None = Field(
        description="Every change made before this moment is recorded (indexed or on its way)"
    )
    objects: int
    indexed: int
    pending: int
    failed: int
    last_error: str | None
    created_at: datetime


class SourceList(BaseModel):
    sources: list[SourceStatus]


class EventsAccepted(BaseModel):
    keys: int
    ignored: int


async def _status(res: ResourcesDep, row: SourceRow) -> SourceStatus:
    counts = await repo.source_counts(res.pool, row.source_id)
    return SourceStatus(
        source_id=row.source_id,
        url=row.url,
        include=row.include,
        interval_s=row.interval_s,
        status=row.status,
        synced_as_of=row.synced_as_of,
        objects=counts.objects,
        indexed=counts.indexed,
        pending=counts.pending,
        failed=counts.failed,
        last_error=row.last_error,
        created_at=row.created_at,
    )


async def _mine(res: ResourcesDep, principal: PrincipalDep, source_id: uuid.UUID) -> SourceRow:
    row = await repo.get_source(res.pool, str(source_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such source")
    return row


def _active(row: SourceRow) -> None:
    if row.status != "active":
        raise HTTPException(status.HTTP_409_CONFLICT, "the source is stopped")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SourceStatus,
    responses={422: {"description": "A URL docindex will not read, or too short an interval"}},
)
async def add_source(body: NewSource, res: ResourcesDep, principal: PrincipalDep) -> SourceStatus:
    """Add a source and sync it now, then every ``interval_s``: new and changed objects
    are indexed as runs, documents of deleted objects are removed."""
    try:
        row = await service.add_source(res, principal, body.url, body.interval_s, body.include)
    except InvalidSource as exc:
        raise invalid(("body", "url"), str(exc), body.url) from exc
    return await _status(res, row)


@router.get("", response_model=SourceList)
async def list_sources(res: ResourcesDep, principal: PrincipalDep) -> SourceList:
    rows = await repo.list_sources(res.pool, principal.tenant_id)
    return SourceList(sources=[await _status(res, row) for row in rows])


@router.get("/{source_id}", response_model=SourceStatus)
async def get_source(
    source_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> SourceStatus:
    return await _status(res, await _mine(res, principal, source_id))


@router.post("/{source_id}/sync", status_code=status.HTTP_202_ACCEPTED)
async def sync_source(
    source_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> dict[str, str]:
    """Sync now, rather than at the next interval."""
    row = await _mine(res, principal, source_id)
    _active(row)
    try:
        await service.sync_now(res, row)
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return {"source_id": row.source_id, "status": "syncing"}


@router.post(
    "/{source_id}/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=EventsAccepted,
    responses={422: {"description": "Not an S3 event notification"}},
)
async def source_events(
    source_id: uuid.UUID, request: Request, res: ResourcesDep, principal: PrincipalDep
) -> EventsAccepted:
    """An S3 or MinIO event notification (``Records[].eventName``, ``s3.bucket.name``,
    ``s3.object.key``): the keys it names that are in the source are synced at once."""
    row = await _mine(res, principal, source_id)  # the body is read only for its owner
    _active(row)
    try:
        body = json.loads(await request.body())
        keys, ignored = await service.sync_keys(res, row, body)
    except (ValueError, service.BadEvents) as exc:
        raise invalid(("body",), str(exc)) from exc
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return EventsAccepted(keys=keys, ignored=ignored)


@router.delete("/{source_id}", status_code=status.HTTP_202_ACCEPTED)
async def delete_source(
    source_id: uuid.UUID,
    res: ResourcesDep,
    principal: PrincipalDep,
    purge: bool = Query(False, description="Delete the source's documents too"),
) -> dict[str, str]:
    """Stop syncing the source (its schedule and workflow). Its documents stay searchable
    unless ``purge``; purged ones being indexed are deleted once they are done."""
    row = await _mine(res, principal, source_id)
    try:
        await service.stop(res, row, purge)
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return {"source_id": row.source_id, "status": "purging" if purge else "stopped"}
