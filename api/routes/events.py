"""A run's live events: ``GET /v1/runs/{run_id}/events``, Server-Sent Events.

Each event's ``id`` is its number in the run's log, so a client that reconnects with
``Last-Event-ID`` gets exactly the events after it. The stream ends after the run's ``run``
event (its totals) when nothing follows it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from docindex import repository
from docindex.events import RunEvent
from docindex.repository import events

from ..deps import PrincipalDep, ResourcesDep
from ..events import EventHub
from ..schemas import invalid, problems

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problems(404))

# A comment line this often keeps proxies from closing an idle stream; the stream also reads
# the log then, in case a notification was missed.
KEEPALIVE_S = 15.0
PAGE = 500


@router.get(
    "/{run_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`document` events (document_id, filename, status, step, "
            "pages_parsed, error_type), then one `run` event with the totals",
        }
    },
)
async def run_events(
    run_id: uuid.UUID,
    request: Request,
    res: ResourcesDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this event id")] = None,
) -> StreamingResponse:
    run = await repository.get_run(res.pool, str(run_id), principal.tenant_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    cursor = after or 0
    if last_event_id is not None:
        try:
            cursor = max(int(last_event_id), 0)
        except ValueError:
            raise invalid(
                ("header", "last-event-id"), "Last-Event-ID must be an event id", last_event_id
            ) from None
    hub: EventHub = request.app.state.event_hub
    return StreamingResponse(
        _stream(res, hub, run.run_id, cursor, ended=not run.is_open),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    res: ResourcesDep, hub: EventHub, run_id: str, cursor: int, *, ended: bool
) -> AsyncIterator[str]:
    with hub.subscribe(run_id) as woken:
        while True:
            woken.clear()  # before reading: a notification during the read wakes us again
            batch = await events.list_run_events(res.pool, run_id, cursor, PAGE)
            for event in batch:
                yield _format(event)
                cursor = event.seq
            if len(batch) == PAGE:
                continue
            if batch and batch[-1].kind == "run":
                return
            if not batch:
                last = await events.last_run_event(res.pool, run_id)
                if (last is None and ended) or (
                    last is not None and last.kind == "run" and last.seq <= cursor
                ):
                    return  # nothing more is coming (a run from before events existed)
            try:
                await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"


def _format(event: RunEvent) -> str:
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.seq}\nevent: {event.kind}\ndata: {data}\n\n"
