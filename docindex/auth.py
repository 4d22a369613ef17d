"""Tenants and their API keys.

A key looks like ``dk_<key id>_<secret>``. Only its SHA-256 is stored: the secret is 256
random bits, so a slow password hash would add latency to every request and no safety.
The key id is in clear so operators can name a key (logs, revocation) without the secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

import asyncpg

from docindex.repository import keys

KEY_PREFIX = "dk_"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# How long a verified key is trusted without asking Postgres again; a revoked key stops
# working within this time.
_CACHE_TTL_S = 10.0


class InvalidTenantName(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: a tenant, through one of its keys."""

    tenant_id: str
    key_id: str


@dataclass(frozen=True)
class NewKey:
    key_id: str
    tenant_id: str
    key: str  # the plaintext; shown once, never stored


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def check_tenant_name(tenant: str) -> str:
    if not TENANT_NAME.match(tenant):
        raise InvalidTenantName(
            "a tenant name is 1-63 lowercase letters, digits, '-' or '_', "
            f"starting with a letter or digit: {tenant!r}"
        )
    return tenant


async def create_api_key(pool: asyncpg.Pool, tenant: str, name: str | None = None) -> str:
    """Create a key for ``tenant`` (and the tenant if it is new); return the key, once."""
    return (await create_key(pool, tenant, name)).key


async def create_key(pool: asyncpg.Pool, tenant: str, name: str | None = None) -> NewKey:
    check_tenant_name(tenant)
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    await keys.insert_key(pool, key_id, tenant, hash_key(key), name)
    return NewKey(key_id=key_id, tenant_id=tenant, key=key)


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> bool:
    return await keys.revoke_key(pool, key_id)


async def list_keys(pool: asyncpg.Pool, tenant: str | None = None) -> list[keys.KeyRow]:
    return await keys.list_keys(pool, tenant)


class KeyVerifier:
    """Resolves a presented key to its tenant, with a short cache of good answers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    async def verify(self, key: str) -> Principal | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        digest = hash_key(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and cached[1] > now:
            return cached[0]
        row = await keys.active_key(self._pool, digest)
        if row is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(tenant_id=row.tenant_id, key_id=row.key_id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (principal, now + _CACHE_TTL_S)
        return principal
