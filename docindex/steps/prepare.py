"""Parse, describe and chunk a document: the CPU steps, as plain async functions.

Every output is saved in the blob store under a key made of the tenant, the content hash
and the options that shaped it, so a retry, a re-index or another run of the same tenant's
bytes with the same spec finds it and does not redo the work (another tenant's never does).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from docling_core.types.doc import DoclingDocument

from docindex.blobstore import (
    BlobStore,
    chunks_key,
    ocr_key,
    parsed_key,
    parsed_meta_key,
    parsed_part_key,
)
from docindex.cage import Cage
from docindex.components import Components
from docindex.errors import EncryptedDocument, TooLarge
from docindex.filetypes import DocumentKind
from docindex.metrics import count_in_activity
from docindex.pagination import page_ranges
from docindex.pipeline.metadata import extract_metadata, quality_report
from docindex.pipeline.parsing import (
    ParsedDocument,
    ParseLimits,
    ensure_has_text,
    pages_to_ocr,
    resolve_pdf_pipeline,
    settle_pages,
)
from docindex.spec import ChunkerSpec, ParserSpec
from docindex.spec import resolve_pdf_pipeline as spec_pdf_pipeline

from . import caged
from .models import (
    ApplyOcrInput,
    Chunked,
    DocumentRef,
    Inspected,
    MergeInput,
    OcrInput,
    OcrResult,
    PageQuality,
    PageRangeInput,
    PageRangeResult,
    Parsed,
    Prepared,
    PrepareInput,
)
from .progress import Progress, blocking

T = TypeVar("T")

# Parsed documents kept in memory (a big PDF can take hundreds of MB).
_PARSED_CACHE_SIZE = 4


class PrepareSteps:
    def __init__(self, blobs: BlobStore, components: Components, cage: Cage | None = None) -> None:
        self.blobs = blobs
        self.components = components
        self.limits = components.limits or ParseLimits()
        # Whatever reads the document's bytes runs in the cage's child processes, killable
        # and limited (docindex/cage.py); the rest (merge, chunk, save) stays here.
        self.cage = cage or Cage()
        # The last few parsed documents, by their content-addressed key: the merge and
        # enrich steps often run where the parse did, and reloading the JSON costs seconds.
        self._parsed: OrderedDict[str, DoclingDocument] = OrderedDict()

    async def prepare(self, inp: PrepareInput, progress: Progress) -> Prepared:
        """Inspect, parse, describe and chunk. A PDF over the spec's split threshold comes
        back inspected only: its page ranges are parsed in parallel, then merged."""
        doc, spec = inp.document, inp.parser
        data = await self.blobs.get(doc.blob_key)
        password = await self._password(doc.password_key)
        if not await self._parsed_in_any_pipeline(doc, spec):
            made = await self._caged(
                progress,
                caged.prepare,
                spec,
                inp.chunker,
                self.limits,
                doc,
                data,
                password,
                on_progress=lambda details: progress.update(**details),
            )
            return await self._save_made(doc, spec, made, password)
        # Parsed before (a reindex, another generation, a retry after the save): inspected
        # here, then the saved parse is described and chunked.
        try:
            found = await self._caged(
                progress, caged.inspect, spec, self.limits, data, doc.filename, password
            )
        except EncryptedDocument:
            # Its password was deleted once it was indexed: a reindex or a new generation
            # reuses the parse it made, with what was inspected then, and needs none.
            if password is None and (reused := await self._reuse_without_password(inp)):
                return reused
            raise
        caged.refuse_long_text(found.kind, len(data), self.limits, inp.chunker)
        inspected = Inspected(
            kind=found.kind.value, pages=found.pages, pipeline=_pipeline(spec, found.kind)
        )
        if found.kind is DocumentKind.PDF and (found.pages or 0) > spec.split_pdf_pages:
            return Prepared(inspected=inspected)
        if password is not None:
            await self.blobs.put(_inspected_key(doc, spec), inspected.model_dump_json().encode())
        variant = spec.variant(inspected.pipeline)
        if (parsed := await self._parsed_before(doc, variant)) is not None:
            document = await self._load_parsed(parsed.parsed_key)
            return await self._describe_and_chunk(doc, parsed, document, inp.chunker)
        parsed, document = await self._parse_whole(spec, doc, variant, data, password, progress)
        return await self._finish_or_ocr(spec, doc, variant, parsed, document, inp.chunker)

    async def parse_page_range(self, inp: PageRangeInput, progress: Progress) -> PageRangeResult:
        """Parse pages first..last, saving every ``checkpoint_pages``, so a retry after a
        crash or a lost heartbeat resumes where the last attempt stopped."""
        doc, spec = inp.document, inp.parser
        pipeline = resolve_pdf_pipeline(spec.pdf_pipeline)
        variant = spec.variant(pipeline)
        total = inp.last_page - inp.first_page + 1
        data = await self.blobs.get(doc.blob_key)
        password = await self._password(doc.password_key)
        part_keys: list[str] = []
        parsed = reused = 0

        def report(done: int, saved: int) -> dict[str, int]:
            # A page parsed is not yet a page a retry skips: only saved parts are.
            return {
                "pages_done": done,
                "pages_total": total,
                "first_page": inp.first_page,
                "last_page": inp.last_page,
                "resume_after_page": inp.first_page + saved - 1,
            }

        for first, last in page_ranges(inp.first_page, inp.last_page, spec.checkpoint_pages):
            key = parsed_part_key(doc.tenant_id, doc.sha256, variant, first, last)
            part_keys.append(key)
            if await self.blobs.exists(key):
                reused += last - first + 1
                continue
            before = parsed + reused

            def on_page(details: dict[str, int], before: int = before) -> None:
                progress.update(**report(before + details["pages_done"], before))

            part: bytes = await self._caged(
                progress,
                caged.parse_range,
                spec,
                self.limits,
                data,
                doc.filename,
                password,
                first,
                last,
                on_progress=on_page,
            )
            await self.blobs.put(key, part)
            parsed += last - first + 1
            progress.checkpoint(**report(parsed + reused, parsed + reused))
        count_in_activity("docindex_pages_parsed", parsed, "Pages parsed", pipeline=pipeline)
        count_in_activity(
            "docindex_pages_resumed",
            reused,
            "Pages found parsed by an earlier attempt and not parsed again",
        )
        return PageRangeResult(part_keys=part_keys, pages_parsed=parsed, pages_reused=reused)

    async def merge(self, inp: MergeInput, progress: Progress) -> Prepared:
        """A split PDF's parts as one document, described and chunked like a whole one."""
        doc, spec = inp.document, inp.parser
        pipeline = spec.pdf_pipeline
        variant = spec.variant(pipeline)
        inspected = Inspected(kind="pdf", pages=None, pipeline=pipeline)
        if (parsed := await self._parsed_before(doc, variant)) is not None:
            document = await self._load_parsed(parsed.parsed_key)
            prepared = await self._describe_and_chunk(doc, parsed, document, inp.chunker)
            inspected.pages = parsed.pages
            return prepared.model_copy(update={"inspected": inspected})
        parts = [await self.blobs.get(key) for key in inp.part_keys]
        made = await self._caged(progress, caged.merge, spec, inp.chunker, self.limits, doc, parts)
        return await self._save_made(doc, spec, made, parsed_here=False)

    async def ocr(self, inp: OcrInput, progress: Progress) -> OcrResult:
        """OCR a batch of a PDF's pages; the lines, with their boxes, go to the blob store
        (a retry of a batch already done finds them there)."""
        from docindex.pipeline.ocr import OcrPage, threads_per_process

        doc, spec = inp.document, inp.parser
        variant = spec.variant(spec.pdf_pipeline)
        key = ocr_key(doc.tenant_id, doc.sha256, variant, inp.pages)
        if await self.blobs.exists(key):
            pages = [OcrPage.model_validate(p) for p in json.loads(await self.blobs.get(key))]
            lines = sum(len(p.lines) for p in pages)
            return OcrResult(ocr_key=key, pages=len(pages), lines=lines, reused=True)
        data = await self.blobs.get(doc.blob_key)
        password = await self._password(doc.password_key)
        total = len(inp.pages)

        def on_page(details: dict[str, int]) -> None:
            progress.update(ocr_pages_done=details["ocr_pages_done"], ocr_pages_total=total)

        started = time.monotonic()
        threads = threads_per_process(self.cage.limits.processes)
        pages = await self._caged(
            progress, caged.ocr, data, inp.pages, password, threads, on_progress=on_page
        )
        seconds = time.monotonic() - started
        await self.blobs.put(key, json.dumps([p.model_dump() for p in pages]).encode())
        count_in_activity("docindex_ocr_pages", len(pages), "PDF pages OCRed")
        count_in_activity(
            "docindex_ocr_milliseconds", round(seconds * 1000), "Time spent OCRing pages"
        )
        lines = sum(len(p.lines) for p in pages)
        return OcrResult(ocr_key=key, pages=len(pages), lines=lines, seconds=round(seconds, 2))

    async def apply_ocr(self, inp: ApplyOcrInput, progress: Progress) -> Prepared:
        """The text layer's parse with the OCR text in place of the pages it read: saved as
        the document's parse, then described and chunked."""
        doc, spec, text_layer = inp.document, inp.parser, inp.parsed
        if (
            parsed := await self._parsed_before(doc, spec.variant(text_layer.pipeline))
        ) is not None:
            document = await self._load_parsed(parsed.parsed_key)
            return await self._describe_and_chunk(doc, parsed, document, inp.chunker)
        made = caged.Made(
            kind=DocumentKind(text_layer.kind), pages=text_layer.pages, pipeline=text_layer.pipeline
        )
        made = await self._caged(
            progress,
            caged.apply_ocr,
            spec,
            inp.chunker,
            self.limits,
            doc,
            made,
            await self.blobs.get(text_layer.parsed_key),
            [await self.blobs.get(key) for key in inp.ocr_keys],
        )
        return await self._save_made(doc, spec, made, parsed_here=False)

    async def _finish_or_ocr(
        self,
        spec: ParserSpec,
        doc: DocumentRef,
        variant: str,
        parsed: Parsed,
        document: DoclingDocument,
        chunker: ChunkerSpec,
    ) -> Prepared:
        """A fresh parse: saved, described and chunked; or, when some pages are to be OCRed,
        saved as the text layer's parse for the OCR steps to complete."""
        inspected = Inspected(kind=parsed.kind, pages=parsed.pages, pipeline=parsed.pipeline)
        if pending := pages_to_ocr(document, spec.ocr, resolve_pdf_pipeline(spec.pdf_pipeline)):
            text_layer = parsed.model_copy(
                update={
                    "parsed_key": parsed_key(doc.tenant_id, doc.sha256, f"{variant}.text-layer")
                }
            )
            await self.blobs.put(text_layer.parsed_key, await blocking(_to_json, document))
            return Prepared(inspected=inspected, parsed=text_layer, ocr_pages=pending)
        await self._finish(doc, variant, parsed, document, ocr=spec.ocr)
        return await self._describe_and_chunk(doc, parsed, document, chunker)

    async def _finish(
        self,
        doc: DocumentRef,
        variant: str,
        parsed: Parsed,
        document: DoclingDocument,
        *,
        ocr: str = "auto",
    ) -> None:
        """Settle the pages, check there is text, count the pages by what they hold, save."""
        await blocking(settle_pages, document)
        await blocking(ensure_has_text, document, DocumentKind(parsed.kind), ocr)
        _count_pages(quality_report(document))
        await self._save_parsed(doc, variant, parsed, document)

    async def _save_made(
        self,
        doc: DocumentRef,
        spec: ParserSpec,
        made: caged.Made,
        password: str | None = None,
        *,
        parsed_here: bool = True,
    ) -> Prepared:
        """Save what the cage made of a document (``caged.prepare``, ``merge``,
        ``apply_ocr``): the parse (its meta last: its presence means the parse is complete)
        and the chunks. ``parsed_here``: its pages were parsed by this call (the others'
        were counted by the steps that parsed them)."""
        inspected = Inspected(kind=made.kind.value, pages=made.pages, pipeline=made.pipeline)
        if made.parsed_json is None:
            return Prepared(inspected=inspected)  # its page ranges are steps of their own
        if password is not None:
            await self.blobs.put(_inspected_key(doc, spec), inspected.model_dump_json().encode())
        if parsed_here:
            count_in_activity(
                "docindex_pages_parsed", made.pages or 0, "Pages parsed", pipeline=made.pipeline
            )
        parsed = Parsed(
            parsed_key=made.parsed_key,
            kind=made.kind.value,
            pages=made.pages,
            pipeline=made.pipeline,
        )
        await self.blobs.put(parsed.parsed_key, made.parsed_json)
        if made.ocr_pages:
            return Prepared(inspected=inspected, parsed=parsed, ocr_pages=list(made.ocr_pages))
        assert made.metadata is not None
        _count_pages(made.metadata.quality)
        await self.blobs.put(
            parsed_meta_key(doc.tenant_id, doc.sha256, spec.variant(made.pipeline)),
            parsed.model_dump_json(exclude={"reused"}).encode(),
        )
        key = chunks_key(doc.tenant_id, doc.sha256, made.chunk_config)
        await self.blobs.put(key, made.chunks_json)
        chunked = Chunked(
            chunks_key=key, chunk_count=made.chunk_count, chunk_config=made.chunk_config
        )
        return Prepared(inspected=inspected, parsed=parsed, metadata=made.metadata, chunked=chunked)

    async def _describe_and_chunk(
        self, doc: DocumentRef, parsed: Parsed, document: DoclingDocument, spec: ChunkerSpec
    ) -> Prepared:
        metadata = extract_metadata(document, parsed.kind, parsed.pipeline)
        chunked = await self.chunk(doc, parsed.parsed_key, spec, document)
        inspected = Inspected(kind=parsed.kind, pages=parsed.pages, pipeline=parsed.pipeline)
        return Prepared(inspected=inspected, parsed=parsed, metadata=metadata, chunked=chunked)

    async def chunk(
        self,
        doc: DocumentRef,
        parsed: str,
        spec: ChunkerSpec,
        document: DoclingDocument | None = None,
    ) -> Chunked:
        chunker = await blocking(self.components.chunker, spec)
        config = chunker.config_digest(parsed, spec.max_tokens)
        key = chunks_key(doc.tenant_id, doc.sha256, config)
        if await self.blobs.exists(key):  # same parse, same chunker: same chunks
            count = len(json.loads(await self.blobs.get(key)))
            return Chunked(chunks_key=key, chunk_count=count, chunk_config=config, reused=True)
        if document is None:
            document = await self._load_parsed(parsed)
        chunks = await blocking(chunker.chunk, document, spec.max_tokens)
        if len(chunks) > self.limits.max_chunks:
            raise TooLarge(
                f"the document makes {len(chunks)} chunks; the limit is {self.limits.max_chunks}"
            )
        await self.blobs.put(key, json.dumps([c.to_dict() for c in chunks]).encode())
        return Chunked(chunks_key=key, chunk_count=len(chunks), chunk_config=config)

    async def _parse_whole(
        self,
        spec: ParserSpec,
        doc: DocumentRef,
        variant: str,
        data: bytes,
        password: str | None,
        progress: Progress,
    ) -> tuple[Parsed, DoclingDocument]:
        """Parse bytes the calling step has just inspected (damage included)."""

        result: ParsedDocument = await self._caged(
            progress,
            caged.parse,
            spec,
            self.limits,
            data,
            doc.filename,
            password,
            damage_checked=True,
            on_progress=lambda details: progress.update(**details),
        )
        count_in_activity(
            "docindex_pages_parsed", result.pages or 0, "Pages parsed", pipeline=result.pipeline
        )
        parsed = Parsed(
            parsed_key=parsed_key(doc.tenant_id, doc.sha256, variant),
            kind=result.kind.value,
            pages=result.pages,
            pipeline=result.pipeline,
        )
        return parsed, result.document

    async def _caged(
        self,
        progress: Progress,
        func: Callable[..., T],
        *args: Any,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> T:
        """``func`` in the cage: its signs of life keep the activity heartbeating, and it is
        stopped (a typed error) before the heartbeat timeout when it shows none."""
        with progress.watching():
            return await self.cage.call(
                func,
                *args,
                on_progress=on_progress,
                on_alive=progress.alive,
                time_budget_s=self.limits.time_budget_s,
                stall_s=progress.stall_s,
                **kwargs,
            )

    async def _reuse_without_password(self, inp: PrepareInput) -> Prepared | None:
        doc, spec = inp.document, inp.parser
        try:
            inspected = Inspected.model_validate_json(
                await self.blobs.get(_inspected_key(doc, spec))
            )
        except FileNotFoundError:
            return None
        parsed = await self._parsed_before(doc, spec.variant(inspected.pipeline))
        if parsed is None:
            return None
        document = await self._load_parsed(parsed.parsed_key)
        prepared = await self._describe_and_chunk(doc, parsed, document, inp.chunker)
        return prepared.model_copy(update={"inspected": inspected})

    async def _password(self, key: str | None) -> str | None:
        return (await self.blobs.get(key)).decode() if key else None

    async def _parsed_in_any_pipeline(self, doc: DocumentRef, spec: ParserSpec) -> bool:
        """Whether these bytes were parsed with this spec before, by whichever pipeline
        their kind takes (a PDF's, or the simple one of every other format)."""
        pdf = spec_pdf_pipeline(spec.pdf_pipeline)  # a worker without it fails the parse
        variants = {spec.variant(pdf), spec.variant("simple")}
        keys = [parsed_meta_key(doc.tenant_id, doc.sha256, v) for v in variants]
        return any(await asyncio.gather(*(self.blobs.exists(k) for k in keys)))

    async def _parsed_before(self, doc: DocumentRef, variant: str) -> Parsed | None:
        """An earlier parse of the same bytes with the same parser options, if saved."""
        try:
            meta = json.loads(
                await self.blobs.get(parsed_meta_key(doc.tenant_id, doc.sha256, variant))
            )
        except FileNotFoundError:
            return None
        return Parsed(**meta, reused=True)

    async def _save_parsed(
        self, doc: DocumentRef, variant: str, parsed: Parsed, document: DoclingDocument
    ) -> None:
        await self.blobs.put(parsed.parsed_key, await blocking(_to_json, document))
        self._remember(parsed.parsed_key, document)
        # Written last: its presence means the parsed document is complete.
        await self.blobs.put(
            parsed_meta_key(doc.tenant_id, doc.sha256, variant),
            parsed.model_dump_json(exclude={"reused"}).encode(),
        )

    async def _load(self, key: str) -> DoclingDocument:
        raw = await self.blobs.get(key)
        return await blocking(DoclingDocument.model_validate_json, raw)

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


def _count_pages(quality: PageQuality | None) -> None:
    """PDF pages by what they hold, and documents indexed with pages that gave no text."""
    if quality is None:
        return
    for name in ("text", "ocr", "unreadable", "empty"):
        count_in_activity(
            "docindex_pdf_pages",
            getattr(quality, name),
            "PDF pages by what they hold",
            page_class=name,
        )
    if quality.warning:
        count_in_activity(
            "docindex_documents_with_missing_pages",
            1,
            "Documents indexed with pages that gave no text (named in their warning)",
        )


def _pipeline(spec: ParserSpec, kind: DocumentKind) -> str:
    return resolve_pdf_pipeline(spec.pdf_pipeline) if kind is DocumentKind.PDF else "simple"


def _to_json(document: DoclingDocument) -> bytes:
    return document.model_dump_json().encode()


def _inspected_key(doc: DocumentRef, spec: ParserSpec) -> str:
    """What inspecting a password-protected document found, kept beside its parse."""
    return parsed_key(doc.tenant_id, doc.sha256, f"inspected-{spec.digest}")
