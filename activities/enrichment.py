"""LLM-queue activities: describe a document, and situate its chunks, with Anthropic.

This queue is rate-limited for all workers together (Temporal's task-queue activity rate),
and each activity makes a bounded number of calls, so the account's rate holds however
many workers run.
"""

from __future__ import annotations

import asyncio
import json

from docling_core.types.doc import DoclingDocument
from temporalio import activity

from docindex.blobstore import BlobStore
from docindex.metrics import count_in_activity
from docindex.models import (
    ContextInput,
    ContextResult,
    DocumentSummary,
    EnrichInput,
    EnrichResult,
)
from docindex.pipeline.enrichment import AnthropicEnricher
from docindex.usage import Usage, combine
from workflows import names

from .errors import provider_errors_are_typed
from .heartbeat import heartbeat_while, run_blocking


def document_text_key(sha256: str) -> str:
    return f"enrich/{sha256}/document.md"


def contexts_key(sha256: str, model: str, chunk_config: str, first: int, last: int) -> str:
    return f"contexts/{sha256}/{model}-{chunk_config}/{first:06d}-{last:06d}.json"


def count_tokens(usages: list[Usage]) -> None:
    for u in usages:
        for kind, value in (
            ("input", u.input_tokens),
            ("output", u.output_tokens),
            ("cache_read", u.cache_read_tokens),
            ("cache_write", u.cache_write_tokens),
        ):
            count_in_activity(
                "docindex_provider_tokens",
                value,
                "Tokens used",
                provider=u.provider,
                model=u.model,
                kind=kind,
            )


class Enrichment:
    def __init__(self, blobs: BlobStore, enricher: AnthropicEnricher | None) -> None:
        self.blobs = blobs
        self.enricher = enricher

    @activity.defn(name=names.ENRICH_DOCUMENT)
    @provider_errors_are_typed
    async def enrich_document(self, inp: EnrichInput) -> EnrichResult:
        if self.enricher is None:
            return EnrichResult(
                status="skipped",
                enricher="none",
                reason="no LLM configured (DOCINDEX_ENRICHER=anthropic and ANTHROPIC_API_KEY)",
            )
        summary_key = f"enrich/{inp.sha256}/summary-{self.enricher.model}.json"
        key = document_text_key(inp.sha256)
        if await self.blobs.exists(summary_key) and await self.blobs.exists(key):
            summary = DocumentSummary.model_validate_json(await self.blobs.get(summary_key))
            return EnrichResult(
                status="enriched",
                enricher="anthropic",
                summary=summary,
                document_text_key=key,
                reused=True,
            )
        raw = await self.blobs.get(inp.parsed_key)
        text = await run_blocking(
            lambda: DoclingDocument.model_validate_json(raw).export_to_markdown()
        )
        await self.blobs.put(key, text.encode())
        summary, usage = await heartbeat_while(self.enricher.describe_document(text))
        count_tokens([usage])
        await self.blobs.put(summary_key, summary.model_dump_json().encode())
        return EnrichResult(
            status="enriched",
            enricher="anthropic",
            summary=summary,
            document_text_key=key,
            usage=[usage],
        )

    @activity.defn(name=names.CONTEXTUALIZE_CHUNKS)
    @provider_errors_are_typed
    async def contextualize_chunks(self, inp: ContextInput) -> ContextResult:
        assert self.enricher is not None, "contextualize needs an enricher"
        key = contexts_key(inp.sha256, self.enricher.model, inp.chunk_config, inp.first, inp.last)
        if await self.blobs.exists(key):
            return ContextResult(contexts_key=key)  # done by an earlier attempt
        document = (await self.blobs.get(inp.document_text_key)).decode()
        chunks = json.loads(await self.blobs.get(inp.chunks_key))[inp.first : inp.last + 1]
        # Sequential on purpose: the first call writes the cached prefix, the rest read it,
        # and the queue's rate limit stays a bound on calls.
        contexts, usages = [], []
        for chunk in chunks:
            context, usage = await heartbeat_while(
                self.enricher.situate_chunk(document, chunk["text"])
            )
            contexts.append(context)
            usages.append(usage)
            await asyncio.sleep(0)
        await self.blobs.put(key, json.dumps(contexts).encode())
        count_tokens(usages)
        return ContextResult(contexts_key=key, usage=list(combine(usages).values()))

    def all(self) -> list:
        return [self.enrich_document, self.contextualize_chunks]
