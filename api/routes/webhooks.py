"""Webhooks: signed POSTs of a tenant's run events to a URL of its choosing."""

from __future__ import annotations

import contextlib
import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from temporalio.service import RPCError

from docindex import webhooks
from docindex.events import WebhookEvent
from docindex.repository import webhooks as repo
from workflows.webhook import WAKE_SIGNAL, wake_webhooks, webhook_workflow_id

from ..deps import PrincipalDep, ResourcesDep
from ..schemas import invalid, problems

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=problems(404))


class WebhookBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2000, description="http:// or https://")
    events: list[WebhookEvent] = Field(min_length=1, max_length=3)


class Webhook(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    created_at: datetime


class NewWebhook(Webhook):
    secret: str = Field(
        description="Signs every delivery (Docindex-Signature); shown only in this answer"
    )


class Delivery(BaseModel):
    delivery_id: str
    event_type: str
    run_id: str
    event_id: int = Field(description="The event's id in its run's event stream")
    data: dict[str, Any]
    status: str = Field(description="pending, delivered or failed (its time ran out)")
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None


class Deliveries(BaseModel):
    deliveries: list[Delivery]
    next_after: int | None = Field(description="Pass as `after` for the next page")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=NewWebhook)
async def create_webhook(
    body: WebhookBody, res: ResourcesDep, principal: PrincipalDep
) -> NewWebhook:
    """Send these events of the tenant's runs to ``url``, each a JSON POST signed with
    HMAC-SHA256 over ``<t>.<body>`` (``Docindex-Signature: t=<unix seconds>,v1=<hex>``),
    retried with backoff for up to a day."""
    try:
        webhooks.check_url(body.url, allow_private=res.settings.webhook_allow_private_urls)
    except webhooks.RefusedUrl as exc:
        raise invalid(("body", "url"), str(exc), body.url) from exc
    secret = webhooks.new_secret()
    row = await repo.create_webhook(
        res.pool, principal.tenant_id, body.url, sorted(set(body.events)), secret
    )
    try:
        # Started now so that it is there to look for deliveries even if a wake is lost.
        await wake_webhooks(res.temporal, res.settings, [row.webhook_id])
    except RPCError:
        log.warning("webhook %s: its workflow starts with its first delivery", row.webhook_id)
    return NewWebhook(**_shown(row), secret=secret)


@router.get("", response_model=list[Webhook])
async def list_webhooks(res: ResourcesDep, principal: PrincipalDep) -> list[Webhook]:
    return [Webhook(**_shown(w)) for w in await repo.list_webhooks(res.pool, principal.tenant_id)]


@router.get("/{webhook_id}", response_model=Webhook)
async def get_webhook(webhook_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> Webhook:
    row = await repo.get_webhook(res.pool, str(webhook_id), principal.tenant_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such webhook")
    return Webhook(**_shown(row))


@router.get("/{webhook_id}/deliveries", response_model=Deliveries)
async def list_deliveries(
    webhook_id: uuid.UUID,
    res: ResourcesDep,
    principal: PrincipalDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Deliveries:
    """The webhook's deliveries in the order they are sent, with their attempts."""
    if await repo.get_webhook(res.pool, str(webhook_id), principal.tenant_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such webhook")
    rows = await repo.list_deliveries(res.pool, str(webhook_id), after, limit)
    return Deliveries(
        deliveries=[
            Delivery(
                delivery_id=d.delivery_id,
                event_type=d.event_type,
                run_id=d.run_id,
                event_id=d.event_seq,
                data=d.data,
                status=d.status,
                attempts=d.attempts,
                created_at=d.created_at,
                last_attempt_at=d.last_attempt_at,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                delivered_at=d.delivered_at,
            )
            for _, d in rows
        ],
        next_after=rows[-1][0] if len(rows) == limit else None,
    )


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(
    webhook_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> Response:
    """Delete the webhook: nothing more is sent, pending deliveries included."""
    if not await repo.delete_webhook(res.pool, str(webhook_id), principal.tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such webhook")
    # Its workflow ends when it next looks; woken, it looks now.
    handle = res.temporal.get_workflow_handle(webhook_workflow_id(str(webhook_id)))
    with contextlib.suppress(RPCError):
        await handle.signal(WAKE_SIGNAL)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _shown(row: repo.WebhookRow) -> dict[str, Any]:
    return {
        "webhook_id": row.webhook_id,
        "url": row.url,
        "events": row.events,
        "created_at": row.created_at,
    }
