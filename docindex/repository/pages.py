"""Keyset pagination of lists served newest first: a page ends at a row, and the next page
starts strictly after it in ``(created_at, id)`` order.

Unlike an offset, a position does not move when rows are inserted or deleted meanwhile:
rows uploaded after the first page are newer than every position handed out, so they
never push an already-seen row onto the next page (no duplicates) nor pull an unseen one
onto a page already read (no gaps). The cursor the API hands out is opaque; it names the
list it belongs to so one list's cursor is not taken for another's.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Position:
    """The last row of a page: the next page holds the rows older than it."""

    created_at: datetime
    id: str

    def cursor(self, kind: str) -> str:
        raw = f"{kind}|{self.created_at.isoformat()}|{self.id}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def from_cursor(cls, kind: str, cursor: str) -> Position:
        """``ValueError`` for anything but a cursor this list handed out."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError("not a cursor this API handed out") from exc
        parts = raw.split("|")
        if len(parts) != 3 or parts[0] != kind:
            raise ValueError("not a cursor of this list")
        try:
            created_at = datetime.fromisoformat(parts[1])
            row_id = str(uuid.UUID(parts[2]))
        except ValueError as exc:
            raise ValueError("not a cursor this API handed out") from exc
        if created_at.tzinfo is None:  # ours always carry Postgres' timestamptz offset
            raise ValueError("not a cursor this API handed out")
        return cls(created_at, row_id)
