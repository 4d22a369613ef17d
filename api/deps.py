"""Resources the routes need, held on the app and handed out as dependencies."""

from __future__ import annotations

import asyncio
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
    limiter: RateLimiter  # requests per API key
    bad_keys: RateLimiter  # requests with a bad key per client address
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
    # Not read here: it names the scheme in the OpenAPI description.
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The calling tenant. ``api/key_gate.py`` found it from its key (and counted the request
    against the key's rate limit) before the body was read."""
    principal = getattr(request.state, "principal", None)
    if principal is None:  # the gate admits no tenant route without one
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "an API key is required", {"WWW-Authenticate": "Bearer"}
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]
