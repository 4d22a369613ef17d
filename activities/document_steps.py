"""CPU-queue activities: parse, metadata, enrich, chunk, store."""

from __future__ import annotations

import io
import json

import asyncpg
import numpy as np
from docling_core.types.doc import DoclingDocument
from temporalio import activity

from docindex import repository
from docindex.blobstore import BlobStore, chunks_key, parsed_key
from docindex.ids import chunk_id
from docindex.models import (
    ChunkInput,
    ChunkResult,
    DocumentMetadata,
    EnrichInput,
    EnrichResult,
    MetadataInput,
    ParseInput,
    ParseResult,
    StoreInput,
    StoreResult,
)
from docindex.pipeline.chunking import Chunk, DocumentChunker
from docindex.pipeline.enrichment import enrich
from docindex.pipeline.metadata import extract_metadata
from docindex.pipeline.parsing import DocumentParser
from workflows import names

from .errors import document_errors_are_final
from .heartbeat import run_blocking


class DocumentSteps:
    def __init__(
        self,
        blobs: BlobStore,
        pool: asyncpg.Pool,
        parser: DocumentParser,
        chunker: DocumentChunker,
    ) -> None:
        self.blobs = blobs
        self.pool = pool
        self.parser = parser
        self.chunker = chunker

    @activity.defn(name=names.PARSE_DOCUMENT)
    @document_errors_are_final
    async def parse_document(self, inp: ParseInput) -> ParseResult:
        data = await self.blobs.get(inp.blob_key)
        pages = {"done": 0, "total": None}

        def on_page(done: int, total: int) -> None:
            pages["done"], pages["total"] = done, total

        parsed = await run_blocking(
            self.parser.parse,
            data,
            inp.filename,
            on_page,
            details=lambda: {"pages_done": pages["done"], "pages_total": pages["total"]},
        )
        key = parsed_key(inp.sha256, parsed.pipeline)
        body = await run_blocking(lambda: parsed.document.model_dump_json().encode())
        await self.blobs.put(key, body)
        return ParseResult(
            parsed_key=key, kind=parsed.kind.value, pages=parsed.pages, pipeline=parsed.pipeline
        )

    async def _load(self, key: str) -> DoclingDocument:
        raw = await self.blobs.get(key)
        return await run_blocking(DoclingDocument.model_validate_json, raw)

    @activity.defn(name=names.EXTRACT_METADATA)
    async def extract_metadata(self, inp: MetadataInput) -> DocumentMetadata:
        document = await self._load(inp.parsed_key)
        return extract_metadata(document, inp.kind, inp.pipeline)

    @activity.defn(name=names.ENRICH_DOCUMENT)
    async def enrich_document(self, inp: EnrichInput) -> EnrichResult:
        return enrich(inp.enricher)

    @activity.defn(name=names.CHUNK_DOCUMENT)
    async def chunk_document(self, inp: ChunkInput) -> ChunkResult:
        config = self.chunker.config_digest(inp.parsed_key)
        key = chunks_key(inp.sha256, config)
        document = await self._load(inp.parsed_key)
        chunks = await run_blocking(self.chunker.chunk, document)
        await self.blobs.put(key, json.dumps([c.to_dict() for c in chunks]).encode())
        return ChunkResult(chunks_key=key, chunk_count=len(chunks), chunk_config=config)

    @activity.defn(name=names.STORE_DOCUMENT)
    async def store_document(self, inp: StoreInput) -> StoreResult:
        chunks = [Chunk(**c) for c in json.loads(await self.blobs.get(inp.chunks_key))]
        vectors = np.load(io.BytesIO(await self.blobs.get(inp.vectors_key)))
        if len(vectors) != len(chunks):
            raise RuntimeError(
                f"{len(vectors)} vectors for {len(chunks)} chunks: artifacts out of step"
            )
        rows = [
            repository.ChunkRow(
                chunk_id=chunk_id(inp.document_id, c.ordinal, inp.chunk_config, inp.model),
                ordinal=c.ordinal,
                text=c.text,
                embed_text=c.embed_text,
                headings=c.headings,
                pages=c.pages,
            )
            for c in chunks
        ]
        count = await repository.store_document(
            self.pool,
            inp.document_id,
            rows,
            vectors,
            inp.model,
            inp.pages,
            inp.metadata.model_dump(),
        )
        return StoreResult(chunk_count=count)

    def all(self) -> list:
        return [
            self.parse_document,
            self.extract_metadata,
            self.enrich_document,
            self.chunk_document,
            self.store_document,
        ]
