"""GPU-queue activity: embed a document's chunks with the process's loaded model."""

from __future__ import annotations

import io
import json

import numpy as np
from temporalio import activity

from docindex.blobstore import BlobStore, vectors_key
from docindex.ids import slug
from docindex.models import EmbedInput, EmbedResult
from docindex.pipeline.embedding import Embedder
from workflows import names

from .heartbeat import run_blocking


class EmbeddingSteps:
    def __init__(self, blobs: BlobStore, embedder: Embedder) -> None:
        self.blobs = blobs
        self.embedder = embedder

    @activity.defn(name=names.EMBED_CHUNKS)
    async def embed_chunks(self, inp: EmbedInput) -> EmbedResult:
        key = vectors_key(inp.sha256, inp.chunk_config, slug(self.embedder.model))
        chunks = json.loads(await self.blobs.get(inp.chunks_key))
        texts = [c["embed_text"] for c in chunks]
        vectors = await run_blocking(
            self.embedder.embed_documents, texts, details=lambda: {"chunks": len(texts)}
        )
        buf = io.BytesIO()
        np.save(buf, vectors)
        await self.blobs.put(key, buf.getvalue())
        return EmbedResult(
            vectors_key=key,
            model=self.embedder.model,
            dimension=self.embedder.dimension,
            count=len(texts),
        )

    def all(self) -> list:
        return [self.embed_chunks]
