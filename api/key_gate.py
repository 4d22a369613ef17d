"""Who is calling, decided from the request's headers before one byte of its body is read.

FastAPI reads and parses a request's body before it runs the route's dependencies, so a key
checked by a dependency lets anyone make the server read, spool and parse a body (and a
malformed one answered 422 before 401). This middleware answers first: 401 without a valid
key, 429 past the key's rate limit or for an address that keeps presenting bad keys, 503
when Postgres cannot say. The routes' ``authenticate`` dependency then reads the principal
it leaves in the request's state.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import asyncpg
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from docindex.auth import Principal

from .deps import Resources

log = logging.getLogger(__name__)

# Routes for the platform (probes, metrics) and the API's own description need no key.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class KeyGate:
    def __init__(self, app: ASGIApp, resources: Callable[[], Resources]) -> None:
        self.app = app
        self.resources = resources

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        admitted = await admit(self.resources(), scope)
        if isinstance(admitted, Principal):
            scope.setdefault("state", {})["principal"] = admitted
            await self.app(scope, receive, send)
        else:
            await admitted(scope, receive, send)


def bearer_token(scope: Scope) -> str | None:
    value = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def admit(res: Resources, scope: Scope) -> Principal | JSONResponse:
    """The caller's principal, or the answer that refuses it."""
    token = bearer_token(scope)
    if token is None:
        return _refuse(401, "an API key is required: Authorization: Bearer <key>", _CHALLENGE)
    client = scope.get("client")
    address = f"address:{client[0] if client else 'unknown'}"
    # An address past its budget of bad keys gets no lookups, only keys already known.
    blocked = await res.bad_keys.peek(address)
    if blocked is not None:
        principal = res.keys.cached(token)
        if principal is None:
            return _refuse(
                429,
                "too many requests with unknown or revoked API keys from this address",
                {"Retry-After": str(math.ceil(blocked))},
            )
    else:
        try:
            principal = await res.keys.verify(token)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # Said as the app says it for any route: come back later, not a stack trace.
            log.warning("database unavailable to check a key: %r", exc)
            return _refuse(503, "the database is unavailable; retry shortly", {"Retry-After": "5"})
        if principal is None:
            await res.bad_keys.acquire(address)
            return _refuse(401, "unknown or revoked API key", _CHALLENGE)
    retry_after = await res.limiter.acquire(principal.key_id)
    if retry_after is not None:
        return _refuse(
            429,
            f"rate limit of this API key ({res.settings.rate_limit}) exceeded",
            {"Retry-After": str(math.ceil(retry_after))},
        )
    return principal


def _refuse(status: int, detail: str, headers: dict[str, str]) -> JSONResponse:
    # The body, if any, is never read: the connection cannot be reused.
    return JSONResponse({"detail": detail}, status, headers={**headers, "Connection": "close"})
