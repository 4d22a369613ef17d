"""A run's events: appended where state changes, read by the live stream and webhooks.

Each statement here is one implicit transaction that takes the run's next event number
(``runs.event_seq``: the row stays locked until the commit, so a run's events commit in the
order of their numbers), appends the event, records a delivery for each of the tenant's
webhooks that subscribed to it, and notifies ``CHANNEL`` with the run id.
"""

from __future__ import annotations

import json
import uuid

from docindex.events import DocumentEvent, RunEvent, RunTotals
from docindex.models import RunState

from ._db import Db

CHANNEL = "docindex_run_events"

# The event's deliveries: one per webhook of the tenant that subscribed to its type ($3).
_DELIVERIES = (
    """
, hooks AS (
    INSERT INTO webhook_deliveries (delivery_id, webhook_id, event_type, run_id, event_seq,
                                    data)
    SELECT gen_random_uuid(), w.webhook_id, $3, ev.run_id, ev.seq,
           ev.data || jsonb_build_object('run_id', ev.run_id)
    FROM ev JOIN webhooks w ON w.tenant_id = ev.tenant_id AND $3 = ANY (w.events)
    RETURNING webhook_id
)
SELECT pg_notify('"""
    + CHANNEL
    + """', ev.run_id::text) AS notified,
       ARRAY(SELECT webhook_id::text FROM hooks) AS webhooks
FROM ev
"""
)


async def record_document_event(db: Db, event: DocumentEvent) -> list[str]:
    """Append a document's event to its run's log, unless it says what the document's last
    event said (a retried write records it once). Returns the webhooks that have a delivery
    of it to make."""
    data = event.model_dump(mode="json", exclude={"document_id"})
    row = await db.fetchrow(
        """WITH doc AS (
               SELECT run_id, jsonb_build_object('document_id', document_id::text,
                                                 'filename', filename) || $2::jsonb AS data
               FROM documents WHERE document_id = $1
           ), last AS (
               SELECT e.data FROM run_events e, doc
               WHERE e.document_id = $1 AND e.run_id = doc.run_id
               ORDER BY e.seq DESC LIMIT 1
           ), bump AS (
               UPDATE runs r SET event_seq = r.event_seq + 1 FROM doc
               WHERE r.run_id = doc.run_id
                 AND NOT EXISTS (SELECT 1 FROM last WHERE last.data = doc.data)
               RETURNING r.run_id, r.tenant_id, r.event_seq, doc.data
           ), ev AS (
               INSERT INTO run_events (run_id, seq, tenant_id, kind, document_id, data)
               SELECT run_id, event_seq, tenant_id, 'document', $1, data FROM bump
               RETURNING run_id, seq, tenant_id, data
           )"""
        + _DELIVERIES,
        uuid.UUID(event.document_id),
        json.dumps(data),
        event.webhook_event,
    )
    return list(row["webhooks"]) if row else []


async def record_run_end(db: Db, run_id: str, status: RunState) -> list[str]:
    """Append the run's last event, its totals counted from its documents (unless the log
    already ends with the same). Returns the webhooks that have a delivery of it to make."""
    row = await db.fetchrow(
        """WITH totals AS (
               SELECT r.run_id, jsonb_build_object(
                          'run_id', r.run_id::text, 'status', $2::text,
                          'document_count', r.document_count,
                          'completed', count(*) FILTER (WHERE d.status = 'completed'),
                          'failed', count(*) FILTER (WHERE d.status = 'failed'),
                          'cancelled', count(*) FILTER (WHERE d.status = 'cancelled'),
                          'quarantined', count(*) FILTER (WHERE d.status = 'quarantined')
                      ) AS data
               FROM runs r LEFT JOIN documents d ON d.run_id = r.run_id
               WHERE r.run_id = $1 GROUP BY r.run_id
           ), last AS (
               SELECT data FROM run_events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1
           ), bump AS (
               UPDATE runs r SET event_seq = r.event_seq + 1 FROM totals
               WHERE r.run_id = totals.run_id
                 AND NOT EXISTS (SELECT 1 FROM last WHERE last.data = totals.data)
               RETURNING r.run_id, r.tenant_id, r.event_seq, totals.data
           ), ev AS (
               INSERT INTO run_events (run_id, seq, tenant_id, kind, data)
               SELECT run_id, event_seq, tenant_id, 'run', data FROM bump
               RETURNING run_id, seq, tenant_id, data
           )"""
        + _DELIVERIES,
        uuid.UUID(run_id),
        status.value,
        "run.completed",
    )
    return list(row["webhooks"]) if row else []


async def list_run_events(db: Db, run_id: str, after: int, limit: int = 500) -> list[RunEvent]:
    """The run's events numbered after ``after``, in order."""
    rows = await db.fetch(
        """SELECT seq, kind, data FROM run_events
           WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
        uuid.UUID(run_id),
        after,
        limit,
    )
    return [
        RunEvent(run_id=run_id, seq=r["seq"], kind=r["kind"], data=json.loads(r["data"]))
        for r in rows
    ]


async def last_run_event(db: Db, run_id: str) -> RunEvent | None:
    row = await db.fetchrow(
        "SELECT seq, kind, data FROM run_events WHERE run_id = $1 ORDER BY seq DESC LIMIT 1",
        uuid.UUID(run_id),
    )
    if row is None:
        return None
    return RunEvent(run_id=run_id, seq=row["seq"], kind=row["kind"], data=json.loads(row["data"]))


def totals_of(event: RunEvent) -> RunTotals:
    return RunTotals.model_validate(event.data)


async def queued_documents(db: Db, run_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT document_id FROM documents WHERE run_id = $1 AND status = 'queued' ORDER BY seq",
        uuid.UUID(run_id),
    )
    return [str(r["document_id"]) for r in rows]
