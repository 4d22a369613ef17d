"""Sources that sync themselves: add one (its row, its workflow and its schedule), read its
state, sync it now or some keys at once (S3 event notifications), stop it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_plus

from docindex.auth import Principal
from docindex.repository import sources as repo
from docindex.repository.sources import SourceRow
from docindex.sources import InvalidSource, SourceLocation, parse_source_url
from workflows import source as source_workflow
from workflows.source_contract import MAX_EVENT_KEYS, SYNC_KEYS_SIGNAL, SYNC_SIGNAL
from workflows.source_contract import source_workflow_id as workflow_id

from ..deps import Resources


class BadEvents(ValueError):
    """The body is not an S3 event notification."""


async def add_source(
    res: Resources, principal: Principal, url: str, interval_s: float, include: Sequence[str]
) -> SourceRow:
    """Record the source and start its workflow (its first sync at once) and schedule.
    Raises ``InvalidSource`` for a URL docindex will not read (a folder outside the allowed
    root, credentials in the URL, another scheme)."""
    parse_source_url(url, res.settings.source_file_root)
    if interval_s < res.settings.source_min_interval_s:
        raise InvalidSource(f"interval_s is at least {res.settings.source_min_interval_s}")
    source_id = str(uuid.uuid4())
    row = await repo.create_source(
        res.pool,
        source_id,
        principal.tenant_id,
        url,
        include,
        interval_s,
        workflow_id(source_id),
    )
    await source_workflow.start_source(
        res.temporal, res.settings, source_id, principal.tenant_id, interval_s
    )
    return row


async def sync_now(res: Resources, row: SourceRow) -> None:
    await res.temporal.get_workflow_handle(row.workflow_id).signal(SYNC_SIGNAL)


async def sync_keys(res: Resources, row: SourceRow, body: Any) -> tuple[int, int]:
    """Signal the keys an S3 (or MinIO) event notification names, those of this source's
    bucket and prefix; return (keys signalled, records ignored)."""
    location = parse_source_url(row.url, res.settings.source_file_root)
    keys, ignored = event_keys(body, location)
    if keys:
        await res.temporal.get_workflow_handle(row.workflow_id).signal(SYNC_KEYS_SIGNAL, keys)
    return len(keys), ignored


def event_keys(body: Any, location: SourceLocation) -> tuple[list[str], int]:
    """The object keys of the records (``Records[].s3.bucket.name``, ``.s3.object.key``,
    URL-encoded as S3 sends them) that are in ``location``; and how many records are not.
    A folder source takes the keys as paths within it, whatever the bucket."""
    records = body.get("Records") if isinstance(body, dict) else None
    if not isinstance(records, list):
        raise BadEvents("expected an S3 event notification: {'Records': [...]}")
    if len(records) > MAX_EVENT_KEYS:
        raise BadEvents(f"at most {MAX_EVENT_KEYS} records per request")
    keys: list[str] = []
    ignored = 0
    for record in records:
        try:
            s3 = record["s3"]
            bucket, raw_key = s3["bucket"]["name"], s3["object"]["key"]
            if not isinstance(raw_key, str) or not isinstance(record["eventName"], str):
                raise TypeError
        except (KeyError, TypeError) as exc:
            raise BadEvents("each record has eventName, s3.bucket.name and s3.object.key") from exc
        key = unquote_plus(raw_key)
        if location.bucket is not None and bucket != location.bucket:
            ignored += 1
        elif not key.startswith(location.prefix) or "\x00" in key:
            ignored += 1
        elif key not in keys:
            # Created or removed alike: the workflow looks at the object as it is now.
            keys.append(key)
    return keys, ignored


async def stop(res: Resources, row: SourceRow, purge: bool) -> None:
    """Stop the schedule and the workflow; the documents stay unless ``purge``."""
    await repo.stop_source(res.pool, row.source_id)
    await source_workflow.stop_source(res.temporal, row.source_id, purge)
