"""Tenants and their API keys (hashes only; ``docindex.auth`` makes and checks keys)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ._db import Db, transaction


@dataclass(frozen=True)
class KeyRow:
    """A key as operators see it: never its secret or hash."""

    key_id: str
    tenant_id: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None = None

    @classmethod
    def from_record(cls, r: asyncpg.Record) -> KeyRow:
        return cls(
            key_id=r["key_id"],
            tenant_id=r["tenant_id"],
            name=r["name"],
            created_at=r["created_at"],
            revoked_at=r["revoked_at"],
        )


async def insert_key(
    db: Db, key_id: str, tenant_id: str, key_hash: bytes, name: str | None
) -> None:
    """Record a key, and its tenant if the tenant is new."""
    async with transaction(db) as conn:
        await conn.execute(
            "INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING", tenant_id
        )
        await conn.execute(
            """INSERT INTO api_keys (key_id, tenant_id, key_hash, name)
               VALUES ($1, $2, $3, $4)""",
            key_id,
            tenant_id,
            key_hash,
            name,
        )


async def revoke_key(db: Db, key_id: str) -> bool:
    """Revoke a key; False if there is no active key by that id."""
    status = await db.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    return status.endswith(" 1")


async def list_keys(db: Db, tenant_id: str | None = None) -> list[KeyRow]:
    rows = await db.fetch(
        """SELECT key_id, tenant_id, name, created_at, revoked_at FROM api_keys
           WHERE $1::text IS NULL OR tenant_id = $1 ORDER BY created_at""",
        tenant_id,
    )
    return [KeyRow.from_record(r) for r in rows]


async def active_key(db: Db, key_hash: bytes) -> KeyRow | None:
    """The unrevoked key with this hash."""
    row = await db.fetchrow(
        """SELECT key_id, tenant_id, name, created_at, revoked_at FROM api_keys
           WHERE key_hash = $1 AND revoked_at IS NULL""",
        key_hash,
    )
    return KeyRow.from_record(row) if row else None
