"""Postgres connection pool and schema migration."""

from __future__ import annotations

from importlib import resources

import asyncpg
from pgvector.asyncpg import register_vector

# Any constant works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x646F6378


async def migrate(url: str) -> None:
    """Create or update the schema. Safe to call from many processes at once."""
    schema = resources.files("docindex").joinpath("schema.sql").read_text()
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(schema)
    finally:
        await conn.close()


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    await migrate(url)
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=register_vector
    )
    assert pool is not None
    return pool
