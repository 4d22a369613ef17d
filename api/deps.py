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
from docindex.spec import EmbedderSpec


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    temporal: Client
    keys: KeyVerifier
    limiter: RateLimiter
    # Query embedders by the digest of their spec: each generation's queries are embedded
    # by the model its chunks were.
    _embedders: dict[str, asyncio.Future[Embedder]] = field(default_factory=dict)

    def load_embedder(self, spec: EmbedderSpec | None = None) -> asyncio.Future[Embedder]:
        """Start loading a query embedder (once per spec) in a thread; a local model takes
        seconds. Without a spec: the embedder of the spec the settings resolve to, the one a
        tenant's first generation gets."""
        if spec is None:
            from docindex.spec import resolve_spec

            spec = resolve_spec(self.settings).embedder
        if spec.digest not in self._embedders:
            from docindex.pipeline.embedders import build_embedder

            self._embedders[spec.digest] = asyncio.ensure_future(
                asyncio.to_thread(build_embedder, spec, self.settings)
            )
        return self._embedders[spec.digest]

    async def embedder(self, spec: EmbedderSpec | None = None) -> Embedder:
        return await self.load_embedder(spec)


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
