"""CPU-queue activities: inspect, parse, metadata, chunk (one at a time, or prepared in one
activity)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import OrderedDict
from pathlib import Path
from typing import Any

import asyncpg
from docling_core.types.doc import DoclingDocument
from temporalio import activity

from docindex.blobstore import (
    BlobStore,
    chunks_key,
    parsed_key,
    parsed_meta_key,
    parsed_part_key,
)
from docindex.filetypes import DocumentKind, detect_kind
from docindex.metrics import count_in_activity
from docindex.models import (
    ChunkInput,
    ChunkResult,
    DocumentMetadata,
    InspectInput,
    InspectResult,
    MergeInput,
    MetadataInput,
    PageRangeInput,
    PageRangeResult,
    ParseInput,
    ParseResult,
    PrepareInput,
    PrepareResult,
)
from docindex.pagination import page_ranges, plan_for
from docindex.pipeline.chunking import DocumentChunker
from docindex.pipeline.metadata import extract_metadata
from docindex.pipeline.parsing import DocumentParser, ensure_has_text, merge_parts
from workflows import names

from .errors import document_errors_are_final
from .heartbeat import run_blocking
from .storing import StoreSteps

# Parsed documents a CPU worker keeps in memory (a big PDF can take hundreds of MB).
_PARSED_CACHE_SIZE = 4


class DocumentSteps:
    def __init__(
        self,
        blobs: BlobStore,
        pool: asyncpg.Pool,
        parser: DocumentParser,
        chunker: DocumentChunker,
        checkpoint_pages: int | None = None,
        prices: dict[str, dict[str, float]] | None = None,
        crash_on_sha256: str | None = None,
        checkpoint_delay_s: float = 0.0,
    ) -> None:
        # None: the PDF pipeline's plan (docindex/pagination.py).
        self.checkpoint_pages = checkpoint_pages
        # Test hook (DOCINDEX_TEST_CRASH_ON_SHA256), off unless set: simulates a document
        # that crashes the parser hard enough to take the whole worker process down.
        self.crash_on_sha256 = crash_on_sha256
        # Test hook (DOCINDEX_TEST_CHECKPOINT_DELAY_S), 0 unless set: parsing is fast enough
        # that a test could not otherwise see (and kill) a page range half-way.
        self.checkpoint_delay_s = checkpoint_delay_s
        self.blobs = blobs
        self.storing = StoreSteps(blobs, pool, prices)
        self.parser = parser
        self.chunker = chunker
        # The last few parsed documents, by their content-addressed key: the metadata and
        # chunk steps usually run on the worker that parsed, and reloading the JSON cost
        # them seconds per document in the benchmark. Keys never change content.
        self._parsed: OrderedDict[str, DoclingDocument] = OrderedDict()

    def _crash_if_poison(self, sha256: str) -> None:
        if self.crash_on_sha256 and sha256 == self.crash_on_sha256:
            activity.logger.warning("TEST HOOK: killing this worker on %s", sha256)
            os.kill(os.getpid(), signal.SIGKILL)

    async def _password(self, key: str | None) -> str | None:
        return (await self.blobs.get(key)).decode() if key else None

    @activity.defn(name=names.INSPECT_DOCUMENT)
    @document_errors_are_final
    async def inspect_document(self, inp: InspectInput) -> InspectResult:
        data = await self.blobs.get(inp.blob_key)
        password = await self._password(inp.password_key)
        found = await run_blocking(self.parser.inspect, data, inp.filename, password)
        pipeline = self.parser.pdf_pipeline if found.kind == "pdf" else "simple"
        return InspectResult(kind=found.kind.value, pages=found.pages, pipeline=pipeline)

    @activity.defn(name=names.PARSE_DOCUMENT)
    @document_errors_are_final
    async def parse_document(self, inp: ParseInput) -> ParseResult:
        """Whole-document parse, after inspect_document (histories from before
        prepare_document)."""
        self._crash_if_poison(inp.sha256)
        data = await self.blobs.get(inp.blob_key)
        kind = detect_kind(data, inp.filename)
        pipeline = self.parser.pdf_pipeline if kind is DocumentKind.PDF else "simple"
        if (earlier := await self._parsed_before(inp.sha256, pipeline)) is not None:
            return earlier
        password = await self._password(inp.password_key)
        result, _ = await self._parse_whole(inp.filename, inp.sha256, data, password)
        return result

    @activity.defn(name=names.PREPARE_DOCUMENT)
    @document_errors_are_final
    async def prepare_document(self, inp: PrepareInput) -> PrepareResult:
        """Inspect, parse, describe and chunk a document in one dispatch. A PDF over the
        split threshold comes back inspected only: its page ranges are parsed in parallel."""
        self._crash_if_poison(inp.sha256)
        data = await self.blobs.get(inp.blob_key)
        password = await self._password(inp.password_key)
        found = await run_blocking(self.parser.inspect, data, inp.filename, password)
        inspected = InspectResult(
            kind=found.kind.value,
            pages=found.pages,
            pipeline=self.parser.pdf_pipeline if found.kind is DocumentKind.PDF else "simple",
        )
        split_above = inp.split_pdf_pages or plan_for(inspected.pipeline).split_above
        if found.kind is DocumentKind.PDF and (found.pages or 0) > split_above:
            return PrepareResult(inspected=inspected)

        if (result := await self._parsed_before(inp.sha256, inspected.pipeline)) is not None:
            document = await self._load_parsed(result.parsed_key)
        else:
            result, document = await self._parse_whole(inp.filename, inp.sha256, data, password)
        metadata = extract_metadata(document, result.kind, result.pipeline)
        chunked = await self._chunk(inp.sha256, result.parsed_key, inp.max_tokens, document)
        return PrepareResult(inspected=inspected, parsed=result, metadata=metadata, chunked=chunked)

    async def _parse_whole(
        self, filename: str, sha256: str, data: bytes, password: str | None
    ) -> tuple[ParseResult, DoclingDocument]:
        """Parse bytes the calling step has just inspected (damage included)."""
        pages = {"done": 0, "total": None}

        def on_page(done: int, total: int) -> None:
            pages["done"], pages["total"] = done, total

        parsed = await run_blocking(
            lambda: self.parser.parse(
                data, filename, on_page, password=password, damage_checked=True
            ),
            details=lambda: {"pages_done": pages["done"], "pages_total": pages["total"]},
        )
        count_in_activity(
            "docindex_pages_parsed", parsed.pages or 0, "Pages parsed", pipeline=parsed.pipeline
        )
        result = ParseResult(
            parsed_key=parsed_key(sha256, parsed.pipeline),
            kind=parsed.kind.value,
            pages=parsed.pages,
            pipeline=parsed.pipeline,
        )
        # Saved for a retry or a re-index of the same bytes, and for the enrichment step.
        await self._save_parsed(sha256, result, parsed.document)
        return result, parsed.document

    async def _parsed_before(self, sha256: str, pipeline: str) -> ParseResult | None:
        """An earlier parse of the same bytes with the same pipeline, if one was saved."""
        try:
            meta = json.loads(await self.blobs.get(parsed_meta_key(sha256, pipeline)))
        except FileNotFoundError:
            return None
        return ParseResult(**meta, reused=True)

    async def _save_parsed(
        self, sha256: str, result: ParseResult, document: DoclingDocument
    ) -> None:
        await self.blobs.put(result.parsed_key, await run_blocking(_to_json, document))
        self._remember(result.parsed_key, document)
        # Written last: its presence means the parsed document is complete.
        await self.blobs.put(
            parsed_meta_key(sha256, result.pipeline),
            result.model_dump_json(exclude={"reused"}).encode(),
        )

    @activity.defn(name=names.PARSE_PAGE_RANGE)
    @document_errors_are_final
    async def parse_page_range(self, inp: PageRangeInput) -> PageRangeResult:
        """Parse pages first..last, saving every few pages, so a retry after a crash or a
        heartbeat timeout resumes where the last attempt stopped, not at the first page."""
        self._crash_if_poison(inp.sha256)
        total = inp.last_page - inp.first_page + 1
        previous = activity.info().heartbeat_details
        if previous:
            last = previous[0].get("resume_after_page") if isinstance(previous[0], dict) else None
            activity.logger.info("resuming %s after page %s", inp.filename, last)
        data = await self.blobs.get(inp.blob_key)
        password = await self._password(inp.password_key)
        part_keys: list[str] = []
        parsed = reused = 0
        every = self.checkpoint_pages or plan_for(inp.pipeline).checkpoint_pages
        for first, last in page_ranges(inp.first_page, inp.last_page, every):
            key = parsed_part_key(inp.sha256, inp.pipeline, first, last)
            part_keys.append(key)
            if await self.blobs.exists(key):
                reused += last - first + 1
                continue
            done_before = parsed + reused
            in_batch = {"done": 0}

            def on_page(done: int, _total: int, state: dict[str, int] = in_batch) -> None:
                state["done"] = done

            part = await run_blocking(
                lambda f=first, la=last, cb=on_page: self.parser.parse(
                    data, inp.filename, cb, password=password, page_range=(f, la)
                ),
                details=lambda b=done_before, st=in_batch: _range_progress(
                    inp, b + st["done"], total
                ),
            )
            await self.blobs.put(key, await run_blocking(_to_json, part.document))
            parsed += last - first + 1
            # Checkpoint: a retry skips every part already in the blob store.
            activity.heartbeat(_range_progress(inp, parsed + reused, total))
            if self.checkpoint_delay_s:
                await asyncio.sleep(self.checkpoint_delay_s)
        count_in_activity("docindex_pages_parsed", parsed, "Pages parsed", pipeline=inp.pipeline)
        count_in_activity(
            "docindex_pages_resumed",
            reused,
            "Pages found parsed by an earlier attempt and not parsed again",
        )
        return PageRangeResult(part_keys=part_keys, pages_parsed=parsed, pages_reused=reused)

    @activity.defn(name=names.MERGE_PARSED_PARTS)
    @document_errors_are_final
    async def merge_parsed_parts(self, inp: MergeInput) -> ParseResult:
        if (earlier := await self._parsed_before(inp.sha256, inp.pipeline)) is not None:
            return earlier
        parts = [await self._load(key) for key in inp.part_keys]
        merged = await run_blocking(merge_parts, parts, Path(inp.filename).stem)
        ensure_has_text(merged, DocumentKind.PDF)
        result = ParseResult(
            parsed_key=parsed_key(inp.sha256, inp.pipeline),
            kind="pdf",
            pages=len(merged.pages) or None,
            pipeline=inp.pipeline,
        )
        await self._save_parsed(inp.sha256, result, merged)
        return result

    async def _load(self, key: str) -> DoclingDocument:
        raw = await self.blobs.get(key)
        return await run_blocking(DoclingDocument.model_validate_json, raw)

    async def _load_parsed(self, key: str) -> DoclingDocument:
        if (document := self._parsed.get(key)) is not None:
            self._parsed.move_to_end(key)
            return document
        document = await self._load(key)
        self._remember(key, document)
        return document

    def _remember(self, key: str, document: DoclingDocument) -> None:
        self._parsed[key] = document
        self._parsed.move_to_end(key)
        while len(self._parsed) > _PARSED_CACHE_SIZE:
            self._parsed.popitem(last=False)

    @activity.defn(name=names.EXTRACT_METADATA)
    async def extract_metadata(self, inp: MetadataInput) -> DocumentMetadata:
        document = await self._load_parsed(inp.parsed_key)
        return extract_metadata(document, inp.kind, inp.pipeline)

    @activity.defn(name=names.CHUNK_DOCUMENT)
    async def chunk_document(self, inp: ChunkInput) -> ChunkResult:
        return await self._chunk(inp.sha256, inp.parsed_key, inp.max_tokens)

    async def _chunk(
        self,
        sha256: str,
        parsed: str,
        max_tokens: int,
        document: DoclingDocument | None = None,
    ) -> ChunkResult:
        config = self.chunker.config_digest(parsed, max_tokens)
        key = chunks_key(sha256, config)
        if await self.blobs.exists(key):  # same parse, same chunker: same chunks
            count = len(json.loads(await self.blobs.get(key)))
            return ChunkResult(chunks_key=key, chunk_count=count, chunk_config=config, reused=True)
        if document is None:
            document = await self._load_parsed(parsed)
        chunks = await run_blocking(self.chunker.chunk, document, max_tokens)
        await self.blobs.put(key, json.dumps([c.to_dict() for c in chunks]).encode())
        return ChunkResult(chunks_key=key, chunk_count=len(chunks), chunk_config=config)

    def all(self) -> list:
        return [
            self.inspect_document,
            self.prepare_document,
            self.parse_document,
            self.parse_page_range,
            self.merge_parsed_parts,
            self.extract_metadata,
            self.chunk_document,
            # Stores scheduled on the CPU queue by histories from before STORE_ON_WORKFLOW_QUEUE.
            self.storing.store_document,
        ]


def _to_json(document: DoclingDocument) -> bytes:
    return document.model_dump_json().encode()


def _range_progress(inp: PageRangeInput, done: int, total: int) -> dict[str, Any]:
    """Heartbeat details: what the Temporal UI shows for a pending page-range activity."""
    return {
        "pages_done": done,
        "pages_total": total,
        "first_page": inp.first_page,
        "last_page": inp.last_page,
        "resume_after_page": inp.first_page + done - 1,
    }
