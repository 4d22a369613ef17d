"""Resources the routes need, held on the app and handed out as dependencies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from temporalio.client import Client

from docindex.blobstore import BlobStore
from docindex.config import Settings
from docindex.pipeline.embedders import Embedder


@dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    temporal: Client
    _embedder: asyncio.Future[Embedder] | None = field(default=None)

    def load_embedder(self) -> asyncio.Future[Embedder]:
        """Start loading the query embedder (once) in a thread; a local model takes seconds.
        Queries are embedded by the same model as the documents they are compared with."""
        if self._embedder is None:
            from docindex.pipeline.embedders import build_embedder

            self._embedder = asyncio.ensure_future(asyncio.to_thread(build_embedder, self.settings))
        return self._embedder

    async def embedder(self) -> Embedder:
        return await self.load_embedder()


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]
