"""Per-key request limits, counted by the ``limits`` library (moving windows).

Counters live in memory by default (one API process); ``redis://`` shares them between
API replicas so a key's limit holds for the whole service.
"""

from __future__ import annotations

import time

from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string


class RateLimiter:
    def __init__(self, spec: str, storage_url: str = "memory://") -> None:
        self._items = parse_many(spec)
        if not storage_url.startswith("async+"):
            storage_url = f"async+{storage_url}"
        self._strategy = MovingWindowRateLimiter(storage_from_string(storage_url))

    async def acquire(self, key: str) -> float | None:
        """Count one request of ``key``; None when allowed, else seconds until it would be."""
        # Test every window before counting in any, so a refused request costs nothing.
        if (retry_after := await self.peek(key)) is not None:
            return retry_after
        for item in self._items:
            await self._strategy.hit(item, "docindex-api", key)
        return None

    async def peek(self, key: str) -> float | None:
        """Like ``acquire``, without counting a request."""
        for item in self._items:
            if not await self._strategy.test(item, "docindex-api", key):
                stats = await self._strategy.get_window_stats(item, "docindex-api", key)
                return max(1.0, stats.reset_time - time.time())
        return None
