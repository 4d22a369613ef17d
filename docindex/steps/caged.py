"""What the CPU steps run in the cage (``docindex.cage``): every part that reads the
document's untrusted bytes, i.e. inspect (with its damage check), parse, and OCR; and what
follows a parse up to its chunks: for a document parsed whole (``prepare``), for a split
PDF's page ranges (``merge``) and for a parse with its OCR text (``apply_ocr``).

The steps after the parse run here too, although they read only our own JSON: they cost
seconds of CPU for a big document, and in the worker's one process two of them at once
would share its one interpreter lock, while the cage's processes each have a core.

Module-level functions, so a child process imports them by name. Each child builds a
parser per spec and limits, and a chunker per spec, once and keeps them for its later
calls. ``report`` sends progress to the step in the worker, which heartbeats it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from docindex.blobstore import parsed_key
from docindex.errors import TooLarge
from docindex.filetypes import DocumentKind
from docindex.spec import ChunkerSpec, ParserSpec

from .models import DocumentMetadata, DocumentRef

if TYPE_CHECKING:
    from docling_core.types.doc import DoclingDocument

    from docindex.pipeline.chunking import DocumentChunker
    from docindex.pipeline.ocr import OcrPage
    from docindex.pipeline.parsing import DocumentParser, Inspection, ParsedDocument, ParseLimits

Report = Callable[[dict[str, Any]], None]

# Plain text and Markdown bytes per token, generously: text longer than max_chunks chunks of
# max_tokens such tokens cannot fit under the chunk cap, and is refused before parsing.
_TEXT_BYTES_PER_TOKEN = 10

_parsers: dict[tuple[str, ParseLimits], DocumentParser] = {}
_chunkers: dict[str, DocumentChunker] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Made:
    """What ``prepare`` made of a document. Either inspected only (a PDF over the split
    threshold: ``parsed_json`` is None), or the text layer's parse with pages to OCR first
    (``ocr_pages``), or parsed, described and chunked. The parse and the chunks travel as
    the JSON the worker saves, not as objects: pickling a parsed document to the worker
    and unpickling it there costs more than the bytes, which are written anyway."""

    kind: DocumentKind
    pages: int | None
    pipeline: str
    parsed_key: str = ""
    parsed_json: bytes | None = None
    ocr_pages: tuple[int, ...] = ()
    metadata: DocumentMetadata | None = None
    chunks_json: bytes = b""
    chunk_count: int = 0
    chunk_config: str = ""


def parser_for(spec: ParserSpec, limits: ParseLimits) -> DocumentParser:
    from docindex.pipeline.parsing import DocumentParser

    with _lock:
        key = (spec.digest, limits)
        if key not in _parsers:
            _parsers[key] = DocumentParser(
                spec.pdf_pipeline,
                limits=limits,
                ocr=spec.ocr,
                table_structure=spec.table_structure,
                tables=spec.tables,
                recover_damaged=spec.recover_damaged,
            )
        return _parsers[key]


def chunker_for(spec: ChunkerSpec) -> DocumentChunker:
    from docindex.pipeline.chunking import DocumentChunker

    with _lock:
        if spec.digest not in _chunkers:
            _chunkers[spec.digest] = DocumentChunker(spec.max_tokens)
        return _chunkers[spec.digest]


def warm(
    spec: ParserSpec, limits: ParseLimits, chunker: ChunkerSpec | None = None, *, report: Report
) -> None:
    """Build the parser (it loads Docling's pipelines) and the chunker (a tokenizer) before
    the first document."""
    parser_for(spec, limits)
    if chunker is not None:
        chunker_for(chunker)


def refuse_long_text(
    kind: DocumentKind, size: int, limits: ParseLimits, chunker: ChunkerSpec
) -> None:
    """Plain text too long for the chunk cap is refused before Docling reads it."""
    most = limits.max_chunks * chunker.max_tokens * _TEXT_BYTES_PER_TOKEN
    if kind in (DocumentKind.TEXT, DocumentKind.MARKDOWN) and size > most:
        raise TooLarge(
            f"{size} bytes of text make more than the limit of {limits.max_chunks} "
            f"chunks of {chunker.max_tokens} tokens"
        )


def prepare(
    spec: ParserSpec,
    chunker: ChunkerSpec,
    limits: ParseLimits,
    doc: DocumentRef,
    data: bytes,
    password: str | None,
    *,
    report: Report,
) -> Made:
    """Inspect; unless it is a PDF to split into page ranges, parse; unless some pages
    need OCR first, settle the pages, check there is text, describe and chunk: what a
    document parsed whole needs, in one call, so its bytes cross to the child once and only
    JSON comes back (``PrepareSteps.prepare`` saves it)."""
    from docindex.pipeline.parsing import resolve_pdf_pipeline

    parser = parser_for(spec, limits)
    found = parser.inspect(data, doc.filename, password)
    refuse_long_text(found.kind, len(data), limits, chunker)
    pdf_pipeline = resolve_pdf_pipeline(spec.pdf_pipeline)
    pipeline = pdf_pipeline if found.kind is DocumentKind.PDF else "simple"
    if found.kind is DocumentKind.PDF and (found.pages or 0) > spec.split_pdf_pages:
        return Made(kind=found.kind, pages=found.pages, pipeline=pipeline)

    def on_page(done: int, total: int) -> None:
        report({"pages_done": done, "pages_total": total})

    result = parser.parse(data, doc.filename, on_page, password=password, damage_checked=True)
    made = Made(kind=result.kind, pages=result.pages, pipeline=result.pipeline)
    return _finished(made, spec.variant(pipeline), spec, chunker, limits, doc, result.document)


def merge(
    spec: ParserSpec,
    chunker: ChunkerSpec,
    limits: ParseLimits,
    doc: DocumentRef,
    parts: Sequence[bytes],
    *,
    report: Report,
) -> Made:
    """A split PDF's parsed page ranges (their JSON, in page order) as one document; then
    as ``prepare`` after its parse."""
    from docling_core.types.doc import DoclingDocument

    from docindex.pipeline.parsing import merge_parts

    document = merge_parts(
        [DoclingDocument.model_validate_json(part) for part in parts], PurePath(doc.filename).stem
    )
    # Named by the spec's PDF pipeline as written, as the ranges' parse was.
    made = Made(
        kind=DocumentKind.PDF, pages=len(document.pages) or None, pipeline=spec.pdf_pipeline
    )
    return _finished(made, spec.variant(made.pipeline), spec, chunker, limits, doc, document)


def apply_ocr(
    spec: ParserSpec,
    chunker: ChunkerSpec,
    limits: ParseLimits,
    doc: DocumentRef,
    made: Made,
    text_layer: bytes,
    ocr: Sequence[bytes],
    *,
    report: Report,
) -> Made:
    """The text layer's parse (``made`` says what it is) with the OCR text (the OCR steps'
    JSON) in place of the pages it read; then described and chunked."""
    from docling_core.types.doc import DoclingDocument

    from docindex.pipeline.ocr import OcrPage
    from docindex.pipeline.parsing import apply_ocr as put_ocr_text

    document = DoclingDocument.model_validate_json(text_layer)
    put_ocr_text(document, [OcrPage.model_validate(p) for raw in ocr for p in json.loads(raw)])
    variant = spec.variant(made.pipeline)
    return _finished(made, variant, spec, chunker, limits, doc, document, ocr_done=True)


def parse_range(
    spec: ParserSpec,
    limits: ParseLimits,
    data: bytes,
    filename: str,
    password: str | None,
    first: int,
    last: int,
    *,
    report: Report,
) -> bytes:
    """Pages first..last of a PDF, parsed, as the JSON the worker saves."""
    result = parse(spec, limits, data, filename, password, report=report, page_range=(first, last))
    return result.document.model_dump_json().encode()


def _finished(
    made: Made,
    variant: str,
    spec: ParserSpec,
    chunker: ChunkerSpec,
    limits: ParseLimits,
    doc: DocumentRef,
    document: DoclingDocument,
    *,
    ocr_done: bool = False,
) -> Made:
    """What follows a parse: the text layer's JSON with the pages to OCR first, or the
    pages settled, the text checked, the document described and chunked."""
    from docindex.pipeline.metadata import extract_metadata
    from docindex.pipeline.parsing import (
        ensure_has_text,
        pages_to_ocr,
        resolve_pdf_pipeline,
        settle_pages,
    )

    if not ocr_done and (
        pending := pages_to_ocr(document, spec.ocr, resolve_pdf_pipeline(spec.pdf_pipeline))
    ):
        return replace(
            made,
            parsed_key=parsed_key(doc.tenant_id, doc.sha256, f"{variant}.text-layer"),
            parsed_json=document.model_dump_json().encode(),
            ocr_pages=tuple(pending),
        )
    settle_pages(document)
    ensure_has_text(document, made.kind, spec.ocr)
    key = parsed_key(doc.tenant_id, doc.sha256, variant)
    chunks = chunker_for(chunker).chunk(document, chunker.max_tokens)
    if len(chunks) > limits.max_chunks:
        raise TooLarge(f"the document makes {len(chunks)} chunks; the limit is {limits.max_chunks}")
    return replace(
        made,
        parsed_key=key,
        parsed_json=document.model_dump_json().encode(),
        metadata=extract_metadata(document, made.kind.value, made.pipeline),
        chunks_json=json.dumps([c.to_dict() for c in chunks]).encode(),
        chunk_count=len(chunks),
        chunk_config=chunker_for(chunker).config_digest(key, chunker.max_tokens),
    )


def inspect(
    spec: ParserSpec,
    limits: ParseLimits,
    data: bytes,
    filename: str,
    password: str | None,
    *,
    report: Report,
) -> Inspection:
    return parser_for(spec, limits).inspect(data, filename, password)


def parse(
    spec: ParserSpec,
    limits: ParseLimits,
    data: bytes,
    filename: str,
    password: str | None,
    *,
    report: Report,
    page_range: tuple[int, int] | None = None,
    damage_checked: bool = False,
) -> ParsedDocument:
    def on_page(done: int, total: int) -> None:
        report({"pages_done": done, "pages_total": total})

    return parser_for(spec, limits).parse(
        data,
        filename,
        on_page,
        password=password,
        page_range=page_range,
        damage_checked=damage_checked,
    )


def ocr(
    data: bytes, pages: Sequence[int], password: str | None, threads: int = 0, *, report: Report
) -> list[OcrPage]:
    from docindex.pipeline.ocr import ocr_pages

    def on_page(done: int) -> None:
        report({"ocr_pages_done": done})

    return ocr_pages(data, pages, password=password, on_page=on_page, threads=threads)
