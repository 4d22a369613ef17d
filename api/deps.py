"""Resources the routes need, held on the app and handed out as dependencies."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from docindex.auth import KeyVerifier, Principal
from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.pipeline.embedders import Embedder
from docindex.ratelimit import RateLimiter


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    temporal: Client
    keys: KeyVerifier
    limiter: RateLimiter
    _embedder: asyncio.Future[Embedder] | None = field(default=None)

    def load_embedder(self) -> asyncio.Future[Embedder]:
        """Start loading the query embedder (once) in a thread; a local model takes seconds.
        Queries are embedded by the model of the spec new runs get, the model their
        documents are embedded with."""
        if self._embedder is None:
            from docindex.pipeline.embedders import build_embedder
            from docindex.spec import resolve_spec

            spec = resolve_spec(self.settings).embedder
            self._embedder = asyncio.ensure_future(
                asyncio.to_thread(build_embedder, spec, self.settings)
            )
        return self._embedder

    async def embedder(self) -> Embedder:
        return await self.load_embedder()


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="A tenant's API key (`docindex keys create --tenant NAME`)",
)


async def authenticate(
    request: Request,
    res: ResourcesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The calling tenant, from its key; every request also counts against its key's limit."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "an API key is required: Authorization: Bearer <key>",
            headers=challenge,
        )
    principal = await res.keys.verify(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key", headers=challenge
        )
    retry_after = await res.limiter.acquire(principal.key_id)
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of this API key ({res.settings.rate_limit}) exceeded",
            headers={"Retry-After": str(math.ceil(retry_after))},
        )
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
