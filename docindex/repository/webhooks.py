"""Webhooks of a tenant and their deliveries (recorded by ``events``, sent by a workflow)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ._db import Db


@dataclass(frozen=True)
class WebhookRow:
    webhook_id: str
    tenant_id: str
    url: str
    events: list[str]
    created_at: datetime

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> WebhookRow:
        return cls(
            webhook_id=str(r["webhook_id"]),
            tenant_id=r["tenant_id"],
            url=r["url"],
            events=list(r["events"]),
            created_at=r["created_at"],
        )


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: str
    webhook_id: str
    event_type: str
    run_id: str
    event_seq: int
    data: dict[str, Any]
    status: str
    attempts: int
    created_at: datetime
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> DeliveryRow:
        return cls(
            delivery_id=str(r["delivery_id"]),
            webhook_id=str(r["webhook_id"]),
            event_type=r["event_type"],
            run_id=str(r["run_id"]),
            event_seq=r["event_seq"],
            data=json.loads(r["data"]),
            status=r["status"],
            attempts=r["attempts"],
            created_at=r["created_at"],
            last_attempt_at=r["last_attempt_at"],
            last_status_code=r["last_status_code"],
            last_error=r["last_error"],
            delivered_at=r["delivered_at"],
        )


@dataclass(frozen=True)
class Outgoing:
    """What one attempt needs: where to, the secret to sign with, what to send."""

    delivery: DeliveryRow
    url: str
    secret: str


async def create_webhook(
    db: Db, tenant_id: str, url: str, events: Sequence[str], secret: str
) -> WebhookRow:
    row = await db.fetchrow(
        """INSERT INTO webhooks (webhook_id, tenant_id, url, events, secret)
           VALUES ($1, $2, $3, $4, $5) RETURNING *""",
        uuid.uuid4(),
        tenant_id,
        url,
        list(events),
        secret,
    )
    return WebhookRow.from_record(row)


async def get_webhook(db: Db, webhook_id: str, tenant_id: str | None = None) -> WebhookRow | None:
    """The webhook; with ``tenant_id``, only if that tenant owns it."""
    row = await db.fetchrow(
        "SELECT * FROM webhooks WHERE webhook_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        uuid.UUID(webhook_id),
        tenant_id,
    )
    return WebhookRow.from_record(row) if row else None


async def delete_webhook(db: Db, webhook_id: str, tenant_id: str) -> bool:
    """Delete the webhook and its deliveries: what is pending is not sent."""
    found = await db.fetchval(
        "DELETE FROM webhooks WHERE webhook_id = $1 AND tenant_id = $2 RETURNING webhook_id",
        uuid.UUID(webhook_id),
        tenant_id,
    )
    return found is not None


async def list_deliveries(
    db: Db, webhook_id: str, after_seq: int = 0, limit: int = 100
) -> list[tuple[int, DeliveryRow]]:
    """The webhook's deliveries in the order they are sent, with their position."""
    rows = await db.fetch(
        """SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND seq > $2
           ORDER BY seq LIMIT $3""",
        uuid.UUID(webhook_id),
        after_seq,
        limit,
    )
    return [(r["seq"], DeliveryRow.from_record(r)) for r in rows]


async def pending_deliveries(db: Db, webhook_id: str, limit: int) -> list[DeliveryRow] | None:
    """The webhook's deliveries still to send, oldest first; None when the webhook is gone."""
    rows = await db.fetch(
        """SELECT d.* FROM webhooks w
           LEFT JOIN LATERAL (
               SELECT * FROM webhook_deliveries
               WHERE webhook_id = w.webhook_id AND status = 'pending' ORDER BY seq LIMIT $2
           ) d ON true
           WHERE w.webhook_id = $1""",
        uuid.UUID(webhook_id),
        limit,
    )
    if not rows:
        return None
    return [DeliveryRow.from_record(r) for r in rows if r["delivery_id"] is not None]


async def outgoing(db: Db, delivery_id: str) -> Outgoing | None:
    """A delivery with its webhook's URL and secret; None when the webhook was deleted."""
    row = await db.fetchrow(
        """SELECT d.*, w.url, w.secret FROM webhook_deliveries d
           JOIN webhooks w USING (webhook_id) WHERE d.delivery_id = $1""",
        uuid.UUID(delivery_id),
    )
    if row is None:
        return None
    return Outgoing(DeliveryRow.from_record(row), row["url"], row["secret"])


async def record_attempt(
    db: Db,
    delivery_id: str,
    *,
    delivered: bool,
    status_code: int | None,
    error: str | None,
) -> None:
    await db.execute(
        """UPDATE webhook_deliveries
           SET attempts = attempts + 1, last_attempt_at = now(), last_status_code = $3,
               last_error = $4,
               status = CASE WHEN $2 THEN 'delivered' ELSE status END,
               delivered_at = CASE WHEN $2 THEN now() ELSE delivered_at END
           WHERE delivery_id = $1""",
        uuid.UUID(delivery_id),
        delivered,
        status_code,
        error,
    )


async def give_up(db: Db, delivery_id: str, reason: str) -> None:
    """Record a delivery that will not be sent (its time ran out)."""
    await db.execute(
        """UPDATE webhook_deliveries SET status = 'failed',
                  last_error = coalesce(last_error, $2)
           WHERE delivery_id = $1 AND status = 'pending'""",
        uuid.UUID(delivery_id),
        reason,
    )


async def list_webhooks(db: Db, tenant_id: str) -> list[WebhookRow]:
    rows = await db.fetch(
        "SELECT * FROM webhooks WHERE tenant_id = $1 ORDER BY created_at", tenant_id
    )
    return [WebhookRow.from_record(r) for r in rows]
