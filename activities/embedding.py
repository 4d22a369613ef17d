"""Embedding activity: on the GPU queue for the local model, on a rate-limited queue for a
hosted API. Chunk contexts, when enrichment wrote them, are prepended before embedding."""

from __future__ import annotations

import io
import json

import numpy as np
from temporalio import activity

from docindex.blobstore import BlobStore, vectors_key
from docindex.ids import config_digest, slug
from docindex.metrics import count_in_activity
from docindex.models import EmbedInput, EmbedResult
from docindex.pipeline.embedders import Embedder
from docindex.usage import Usage
from workflows import names

from .errors import provider_errors_are_typed
from .heartbeat import heartbeat_while
from .storing import load_contexts


class EmbeddingSteps:
    def __init__(self, blobs: BlobStore, embedder: Embedder) -> None:
        self.blobs = blobs
        self.embedder = embedder

    @activity.defn(name=names.EMBED_CHUNKS)
    @provider_errors_are_typed
    async def embed_chunks(self, inp: EmbedInput) -> EmbedResult:
        chunks = json.loads(await self.blobs.get(inp.chunks_key))
        contexts = await load_contexts(self.blobs, inp.contexts_keys)
        texts = embed_texts(chunks, contexts)
        variant = config_digest({"chunks": inp.chunk_config, "contexts": inp.contexts_keys})
        key = vectors_key(inp.sha256, variant, slug(self.embedder.model))
        if await self.blobs.exists(key):  # same texts, same model: same vectors, no cost
            vectors = np.load(io.BytesIO(await self.blobs.get(key)))
            return EmbedResult(
                vectors_key=key,
                model=self.embedder.model,
                dimension=self.embedder.dimension,
                count=len(vectors),
                reused=True,
            )
        embedded = await heartbeat_while(
            self.embedder.embed_documents(texts), details=lambda: {"chunks": len(texts)}
        )
        count_in_activity(
            "docindex_chunks_embedded", len(texts), "Chunks embedded", model=self.embedder.model
        )
        count_in_activity(
            "docindex_provider_tokens",
            embedded.tokens,
            "Tokens used",
            provider=self.embedder.provider,
            model=self.embedder.model,
            kind="embedding",
        )
        buf = io.BytesIO()
        np.save(buf, embedded.vectors)
        await self.blobs.put(key, buf.getvalue())
        return EmbedResult(
            vectors_key=key,
            model=self.embedder.model,
            dimension=self.embedder.dimension,
            count=len(texts),
            usage=Usage(
                provider=self.embedder.provider,
                model=self.embedder.model,
                requests=embedded.requests,
                embedding_tokens=embedded.tokens,
            ),
        )

    def all(self) -> list:
        return [self.embed_chunks]


def embed_texts(chunks: list[dict], contexts: list[str] | None) -> list[str]:
    if contexts is None:
        return [c["embed_text"] for c in chunks]
    if len(contexts) != len(chunks):
        raise RuntimeError(f"{len(contexts)} contexts for {len(chunks)} chunks")
    return [
        f"{ctx}\n\n{c['embed_text']}" if ctx else c["embed_text"]
        for c, ctx in zip(chunks, contexts, strict=True)
    ]
