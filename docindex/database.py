"""Postgres connection pool and schema migration."""

from __future__ import annotations

import hashlib
from importlib import resources

import asyncpg
from pgvector.asyncpg import register_vector

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x646F6378


async def migrate(url: str) -> None:
    """Create or update the schema. Safe to call from many processes at once.

    Applied only when schema.sql changed since it was last applied: its ALTER TABLEs take
    exclusive locks even when there is nothing to alter, and a worker starting during
    traffic would otherwise deadlock with searches and stores in flight."""
    schema = resources.files("docindex").joinpath("schema.sql").read_text()
    digest = hashlib.sha256(schema.encode()).hexdigest()
    conn = await asyncpg.connect(url)
    try:
        if await _applied(conn, digest):
            return
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            if await _applied(conn, digest):
                return  # another process applied it while we waited for the lock
            await conn.execute(schema)
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_applied (
                       digest text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            await conn.execute(
                "INSERT INTO schema_applied (digest) VALUES ($1) ON CONFLICT DO NOTHING", digest
            )
    finally:
        await conn.close()


async def _applied(conn: asyncpg.Connection, digest: str) -> bool:
    if not await conn.fetchval("SELECT to_regclass('schema_applied') IS NOT NULL"):
        return False
    return bool(await conn.fetchval("SELECT 1 FROM schema_applied WHERE digest = $1", digest))


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    await migrate(url)
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=register_vector
    )
    assert pool is not None
    return pool
