"""Store a document's chunks and vectors in Postgres, in one transaction.

Free of Docling and torch: the light workflow worker runs it, as a local activity in the
workflow task that received the vectors."""

from __future__ import annotations

import io
import json

import asyncpg
import numpy as np

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.gc import release_password
from docindex.ids import chunk_id
from docindex.usage import combine, cost_usd

from .contexts import load_contexts, with_context
from .models import DeriveTarget, Stored, StoreInput
from .progress import Progress


class StoreSteps:
    def __init__(
        self,
        blobs: BlobStore,
        pool: asyncpg.Pool,
        prices: dict[str, dict[str, float]] | None = None,
    ) -> None:
        self.blobs = blobs
        self.pool = pool
        self.prices = prices or {}

    async def store(self, inp: StoreInput, progress: Progress | None = None) -> Stored:
        chunks = json.loads(await self.blobs.get(inp.chunks_key))
        vectors = np.load(io.BytesIO(await self.blobs.get(inp.vectors_key)))
        contexts = await load_contexts(self.blobs, inp.contexts_keys) or [None] * len(chunks)
        if not (len(vectors) == len(chunks) == len(contexts)):
            raise RuntimeError(
                f"{len(vectors)} vectors, {len(contexts)} contexts for {len(chunks)} chunks: "
                "artifacts out of step"
            )
        generation_id = inp.generation_id or await repository.generation_for_document(
            self.pool, inp.document_id
        )
        rows = [
            repository.ChunkRow(
                chunk_id=chunk_id(
                    inp.document_id, c["ordinal"], inp.chunk_config, inp.model, generation_id
                ),
                ordinal=c["ordinal"],
                text=c["text"],
                embed_text=with_context(c["embed_text"], ctx),
                headings=c["headings"],
                pages=c["pages"],
                context=ctx,
            )
            for c, ctx in zip(chunks, contexts, strict=True)
        ]
        metadata = inp.metadata.model_dump()
        metadata["enrichment"] = {
            "status": inp.enrichment_status,
            "reason": inp.enrichment_reason,
            **(inp.summary.model_dump() if inp.summary else {}),
        }
        usage = combine(inp.usage)
        count = await repository.store_document(
            self.pool,
            inp.document_id,
            rows,
            vectors,
            inp.model,
            inp.pages,
            metadata,
            tokens={
                key: {**u.model_dump(), "cost_usd": cost_usd(u, self.prices)}
                for key, u in usage.items()
            },
            cost_usd=sum(cost_usd(u, self.prices) for u in usage.values()),
            generation_id=generation_id,
            derive=inp.derive,
        )
        if not inp.derive:
            # Indexed: its parse succeeded, so the PDF's password is not kept any longer
            # (a reindex that must parse it again needs it uploaded again).
            await release_password(self.pool, self.blobs, inp.document_id)
        others = (
            []
            if inp.derive
            else await repository.other_live_generations(self.pool, inp.document_id, generation_id)
        )
        return Stored(
            chunk_count=count,
            generation_id=generation_id,
            derive_into=[DeriveTarget(generation_id=g.generation_id, spec=g.spec) for g in others],
        )
