"""Describe a document and situate its chunks with an LLM (Anthropic's contextual
retrieval). With no LLM in the spec, or no key on this worker, the step is skipped."""

from __future__ import annotations

import asyncio
import json

from docling_core.types.doc import DoclingDocument

from docindex.blobstore import BlobStore, contexts_key, document_text_key, summary_key
from docindex.components import Components
from docindex.metrics import count_in_activity
from docindex.usage import Usage, combine

from .models import ContextInput, Contexts, DocumentSummary, Enriched, EnrichInput
from .progress import Progress, blocking


class EnrichSteps:
    def __init__(self, blobs: BlobStore, components: Components) -> None:
        self.blobs = blobs
        self.components = components

    async def describe(self, inp: EnrichInput, progress: Progress) -> Enriched:
        enricher = self.components.enricher(inp.enricher)
        if enricher is None:
            reason = (
                "disabled by the run's pipeline (enricher: none)"
                if inp.enricher.kind == "none"
                else "no LLM key on the worker (ANTHROPIC_API_KEY)"
            )
            return Enriched(status="skipped", enricher=inp.enricher.kind, reason=reason)
        summary_at = summary_key(inp.tenant_id, inp.sha256, enricher.model)
        key = document_text_key(inp.tenant_id, inp.sha256)
        if await self.blobs.exists(summary_at) and await self.blobs.exists(key):
            summary = DocumentSummary.model_validate_json(await self.blobs.get(summary_at))
            return Enriched(
                status="enriched",
                enricher="anthropic",
                summary=summary,
                document_text_key=key,
                reused=True,
            )
        raw = await self.blobs.get(inp.parsed_key)
        text = await blocking(lambda: DoclingDocument.model_validate_json(raw).export_to_markdown())
        await self.blobs.put(key, text.encode())
        summary, usage = await enricher.describe_document(text)
        count_tokens([usage])
        await self.blobs.put(summary_at, summary.model_dump_json().encode())
        return Enriched(
            status="enriched",
            enricher="anthropic",
            summary=summary,
            document_text_key=key,
            usage=[usage],
        )

    async def contextualize(self, inp: ContextInput, progress: Progress) -> Contexts:
        enricher = self.components.enricher(inp.enricher)
        if enricher is None:
            raise RuntimeError("chunk contexts need an enricher and its key on this worker")
        key = contexts_key(
            inp.tenant_id, inp.sha256, enricher.model, inp.chunk_config, inp.first, inp.last
        )
        if await self.blobs.exists(key):
            return Contexts(contexts_key=key)  # done by an earlier attempt
        document = (await self.blobs.get(inp.document_text_key)).decode()
        chunks = json.loads(await self.blobs.get(inp.chunks_key))[inp.first : inp.last + 1]
        # Sequential on purpose: the first call writes the cached prefix, the rest read it,
        # and the queue's rate limit stays a bound on calls.
        contexts, usages = [], []
        for done, chunk in enumerate(chunks):
            context, usage = await enricher.situate_chunk(document, chunk["text"])
            contexts.append(context)
            usages.append(usage)
            progress.update(chunks_done=done + 1)
            await asyncio.sleep(0)
        await self.blobs.put(key, json.dumps(contexts).encode())
        count_tokens(usages)
        return Contexts(contexts_key=key, usage=list(combine(usages).values()))


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
