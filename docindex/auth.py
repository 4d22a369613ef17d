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
from collections import OrderedDict
from dataclasses import dataclass

import asyncpg

from docindex.repository import keys

KEY_PREFIX = "dk_"
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# The only shape create_key issues: 12 hex digits of key id, 43 URL-safe characters of secret.
_KEY_SHAPE = re.compile(r"^dk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
# How long a lookup's answer is kept: a revoked key stops working within this time, and an
# unknown key presented again within it costs no query.
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
    """Resolves a presented key to its tenant, with short caches of good and bad answers.

    Both caches are bounded: the good one by the keys in use, the bad one by dropping its
    oldest entries, so a stream of invented keys costs a fixed amount of memory."""

    def __init__(self, pool: asyncpg.Pool, max_entries: int = 10_000) -> None:
        self._pool = pool
        self._max_entries = max_entries
        self._good: dict[bytes, tuple[Principal, float]] = {}
        self._bad: OrderedDict[bytes, float] = OrderedDict()

    def cached(self, key: str) -> Principal | None:
        """The key's tenant if a recent lookup found it; never asks Postgres."""
        found = self._good.get(hash_key(key))
        return found[0] if found and found[1] > time.monotonic() else None

    async def verify(self, key: str) -> Principal | None:
        # A key that cannot have been issued is refused without a lookup.
        if not _KEY_SHAPE.match(key):
            return None
        digest = hash_key(key)
        now = time.monotonic()
        good = self._good.get(digest)
        if good and good[1] > now:
            return good[0]
        bad = self._bad.get(digest)
        if bad is not None and bad > now:
            return None
        row = await keys.active_key(self._pool, digest)
        if row is None:
            self._good.pop(digest, None)
            self._bad[digest] = now + _CACHE_TTL_S
            self._bad.move_to_end(digest)
            while len(self._bad) > self._max_entries:
                self._bad.popitem(last=False)
            return None
        self._bad.pop(digest, None)
        principal = Principal(tenant_id=row.tenant_id, key_id=row.key_id)
        if len(self._good) >= self._max_entries:
            self._good.clear()
        self._good[digest] = (principal, now + _CACHE_TTL_S)
        return principal
