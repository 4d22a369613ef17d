"""Embed a document's chunks (with their contexts, when enrichment wrote any)."""

from __future__ import annotations

import io
import json

import numpy as np

from docindex.blobstore import BlobStore, vectors_key
from docindex.components import Components
from docindex.ids import config_digest, slug
from docindex.metrics import count_in_activity
from docindex.usage import Usage

from .contexts import load_contexts, with_context
from .models import Embedded, EmbedInput
from .progress import Progress


class EmbedSteps:
    def __init__(self, blobs: BlobStore, components: Components) -> None:
        self.blobs = blobs
        self.components = components

    async def embed(self, inp: EmbedInput, progress: Progress) -> Embedded:
        embedder = self.components.embedder(inp.embedder)
        chunks = json.loads(await self.blobs.get(inp.chunks_key))
        contexts = await load_contexts(self.blobs, inp.contexts_keys)
        texts = embed_texts(chunks, contexts)
        variant = config_digest({"chunks": inp.chunk_config, "contexts": inp.contexts_keys})
        key = vectors_key(inp.tenant_id, inp.sha256, variant, slug(embedder.model))
        if await self.blobs.exists(key):  # same texts, same model: same vectors, no cost
            vectors = np.load(io.BytesIO(await self.blobs.get(key)))
            return Embedded(
                vectors_key=key,
                model=embedder.model,
                dimension=embedder.dimension,
                count=len(vectors),
                reused=True,
            )
        progress.update(chunks=len(texts))
        embedded = await embedder.embed_documents(texts)
        count_in_activity(
            "docindex_chunks_embedded", len(texts), "Chunks embedded", model=embedder.model
        )
        count_in_activity(
            "docindex_provider_tokens",
            embedded.tokens,
            "Tokens used",
            provider=embedder.provider,
            model=embedder.model,
            kind="embedding",
        )
        buf = io.BytesIO()
        np.save(buf, embedded.vectors)
        await self.blobs.put(key, buf.getvalue())
        return Embedded(
            vectors_key=key,
            model=embedder.model,
            dimension=embedder.dimension,
            count=len(texts),
            usage=Usage(
                provider=embedder.provider,
                model=embedder.model,
                requests=embedded.requests,
                embedding_tokens=embedded.tokens,
            ),
        )


def embed_texts(chunks: list[dict], contexts: list[str] | None) -> list[str]:
    if contexts is None:
        return [c["embed_text"] for c in chunks]
    if len(contexts) != len(chunks):
        raise RuntimeError(f"{len(contexts)} contexts for {len(chunks)} chunks")
    return [with_context(c["embed_text"], ctx) for c, ctx in zip(chunks, contexts, strict=True)]
