"""What every aggregate's functions run on: a pool, or a connection inside a transaction."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

# A function that takes ``Db`` runs on its own connection from a pool, or joins the
# transaction of the connection it is given (a use case writing several aggregates at once).
Db = asyncpg.Pool | asyncpg.Connection


@contextlib.asynccontextmanager
async def transaction(db: Db) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on ``db``: a new one on a pooled connection, or a savepoint inside the
    transaction a given connection is already in."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
