"""Webhook deliveries, sent by ``WebhookWorkflow``: which are pending, one attempt, giving up.

Only delivery ids cross into workflow history: the attempt reads the URL, the secret and
the event from Postgres, so no secret (and no document data) is ever in a history.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from docindex import webhooks
from docindex.repository import webhooks as repo

WEBHOOK_GONE = "WebhookDeleted"
NOT_DELIVERED = "WebhookNotDelivered"


class PendingInput(BaseModel):
    webhook_id: str
    limit: int = 100


class PendingDelivery(BaseModel):
    delivery_id: str
    created_at: datetime


class Pending(BaseModel):
    # False: the webhook was deleted, and its workflow ends.
    exists: bool
    deliveries: list[PendingDelivery]


class GiveUpInput(BaseModel):
    delivery_id: str
    reason: str


class WebhookActivities:
    def __init__(self, pool: asyncpg.Pool, *, allow_private: bool, timeout_s: float) -> None:
        self.pool = pool
        self.allow_private = allow_private
        self.timeout_s = timeout_s

    @activity.defn
    async def pending_webhook_deliveries(self, inp: PendingInput) -> Pending:
        found = await repo.pending_deliveries(self.pool, inp.webhook_id, inp.limit)
        if found is None:
            return Pending(exists=False, deliveries=[])
        return Pending(
            exists=True,
            deliveries=[
                PendingDelivery(delivery_id=d.delivery_id, created_at=d.created_at) for d in found
            ],
        )

    @activity.defn
    async def deliver_webhook(self, delivery_id: str) -> None:
        """One attempt, recorded; raises (so Temporal retries with backoff) unless the
        receiver answered 2xx."""
        out = await repo.outgoing(self.pool, delivery_id)
        if out is None:
            raise ApplicationError("the webhook was deleted", type=WEBHOOK_GONE, non_retryable=True)
        d = out.delivery
        if d.status != "pending":
            return  # an earlier attempt delivered it and its answer to us was lost
        answer = await webhooks.post(
            out.url,
            out.secret,
            webhooks.body_of(d.delivery_id, d.event_type, d.created_at, d.data),
            delivery_id=d.delivery_id,
            event_type=d.event_type,
            timeout_s=self.timeout_s,
            allow_private=self.allow_private,
        )
        await repo.record_attempt(
            self.pool,
            delivery_id,
            delivered=answer.delivered,
            status_code=answer.status_code,
            error=answer.error,
        )
        if not answer.delivered:
            raise ApplicationError(answer.error or "not delivered", type=NOT_DELIVERED)

    @activity.defn
    async def give_up_webhook_delivery(self, inp: GiveUpInput) -> None:
        await repo.give_up(self.pool, inp.delivery_id, inp.reason)

    def all(self) -> list:
        return [
            self.pending_webhook_deliveries,
            self.deliver_webhook,
            self.give_up_webhook_delivery,
        ]
