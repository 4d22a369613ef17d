"""The store step: a document's chunks and vectors into Postgres, in one transaction.

Postgres I/O, not CPU work: the document workflow runs it as a local activity of the
workflow worker, in the workflow task that received the vectors (no queue, no extra
workflow task). Workers of the CPU queue and the workflow queue still register it as an
activity for workflows started before that change (tests/histories/).
"""

from __future__ import annotations

import io
import json

import asyncpg
import numpy as np
from temporalio import activity

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.ids import chunk_id
from docindex.models import StoreInput, StoreResult
from docindex.usage import combine, cost_usd
from workflows import names

from .heartbeat import heartbeat_while


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

    @activity.defn(name=names.STORE_DOCUMENT)
    async def store_document(self, inp: StoreInput) -> StoreResult:
        # Plain dicts (the chunker's Chunk.to_dict()): this module stays free of Docling, so
        # the light workflow worker can run it.
        chunks = json.loads(await self.blobs.get(inp.chunks_key))
        vectors = np.load(io.BytesIO(await self.blobs.get(inp.vectors_key)))
        contexts = await load_contexts(self.blobs, inp.contexts_keys) or [None] * len(chunks)
        if not (len(vectors) == len(chunks) == len(contexts)):
            raise RuntimeError(
                f"{len(vectors)} vectors, {len(contexts)} contexts for {len(chunks)} chunks: "
                "artifacts out of step"
            )
        rows = [
            repository.ChunkRow(
                chunk_id=chunk_id(inp.document_id, c["ordinal"], inp.chunk_config, inp.model),
                ordinal=c["ordinal"],
                text=c["text"],
                embed_text=f"{ctx}\n\n{c['embed_text']}" if ctx else c["embed_text"],
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
        # As an activity (histories from before STORE_IN_WORKFLOW_TASK), heartbeats let a
        # dead worker be noticed within the heartbeat timeout; as a local activity, the
        # workflow task's timeout does that and heartbeat_while only waits.
        count = await heartbeat_while(
            repository.store_document(
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
            )
        )
        return StoreResult(chunk_count=count)

    def all(self) -> list:
        return [self.store_document]


async def load_contexts(blobs: BlobStore, keys: list[str]) -> list[str] | None:
    """Chunk contexts written by the enrichment step, in chunk order; None without any."""
    if not keys:
        return None
    contexts: list[str] = []
    for key in keys:  # in chunk order: the workflow lists them that way
        contexts.extend(json.loads(await blobs.get(key)))
    return contexts
