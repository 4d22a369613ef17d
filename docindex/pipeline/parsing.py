"""Parse bytes into a DoclingDocument, with typed errors for input that can't be parsed.

Plain functions and one class; Temporal appears nowhere in this module.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from docling.datamodel.backend_options import PdfBackendOptions
from docling.datamodel.base_models import ConversionStatus, DocumentStream, InputFormat
from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
from docling.document_converter import DocumentConverter, PdfFormatOption
from docling.pipeline.native_pdf_pipeline import NativePdfPipeline
from docling_core.types.doc import DoclingDocument
from pydantic import SecretStr

from docindex.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ParseTimeout,
    TooLarge,
)
from docindex.filetypes import DocumentKind, detect_kind

log = logging.getLogger(__name__)

PageCallback = Callable[[int, int], None]
"""Called with (pages_done, pages_total) as pages finish."""

_FORMATS = {
    DocumentKind.PDF: InputFormat.PDF,
    DocumentKind.DOCX: InputFormat.DOCX,
    DocumentKind.PPTX: InputFormat.PPTX,
    DocumentKind.XLSX: InputFormat.XLSX,
    DocumentKind.HTML: InputFormat.HTML,
    DocumentKind.MARKDOWN: InputFormat.MD,
    DocumentKind.TEXT: InputFormat.MD,
}
_EXTENSIONS = {
    DocumentKind.PDF: ".pdf",
    DocumentKind.DOCX: ".docx",
    DocumentKind.PPTX: ".pptx",
    DocumentKind.XLSX: ".xlsx",
    DocumentKind.HTML: ".html",
    DocumentKind.MARKDOWN: ".md",
    DocumentKind.TEXT: ".md",
}


class PipelineUnavailable(RuntimeError):
    """The configured PDF pipeline cannot run on this worker (raised at worker start)."""


def resolve_pdf_pipeline(requested: str) -> str:
    """Pick ``standard`` or ``native``; ``standard`` needs layout models on local disk."""
    artifacts = os.environ.get("DOCLING_ARTIFACTS_PATH")
    have_models = bool(artifacts) and Path(artifacts or "").is_dir()
    if requested == "native":
        return "native"
    if requested == "standard":
        if not have_models:
            raise PipelineUnavailable(
                "DOCINDEX_PDF_PIPELINE=standard needs Docling's layout models: set "
                "DOCLING_ARTIFACTS_PATH to a directory made by `docling-tools models download`"
            )
        return "standard"
    return "standard" if have_models else "native"


@dataclass(frozen=True)
class ParseLimits:
    max_bytes: int = 200 * 1024 * 1024
    max_pages: int = 2000
    # Per conversion call (a whole document, or one page range of a big PDF).
    time_budget_s: float | None = 3600.0


@dataclass
class Inspection:
    kind: DocumentKind
    pages: int | None


@dataclass
class ParsedDocument:
    document: DoclingDocument
    kind: DocumentKind
    pages: int | None
    pipeline: str


class DocumentParser:
    """Holds the DocumentConverters of one process: building them loads the pipelines."""

    def __init__(
        self,
        pdf_pipeline: str = "auto",
        *,
        limits: ParseLimits | None = None,
        ocr: bool = True,
        table_structure: bool = True,
    ) -> None:
        self.pdf_pipeline = resolve_pdf_pipeline(pdf_pipeline)
        self.limits = limits or ParseLimits()
        if self.pdf_pipeline == "native":
            self._pdf_options: NativePdfPipelineOptions | PdfPipelineOptions = (
                NativePdfPipelineOptions(document_timeout=self.limits.time_budget_s)
            )
        else:
            self._pdf_options = PdfPipelineOptions(
                artifacts_path=os.environ["DOCLING_ARTIFACTS_PATH"],
                do_ocr=ocr,
                do_table_structure=table_structure,
                document_timeout=self.limits.time_budget_s,
            )
        self._converter = self._build(password=None)

    def _build(self, password: str | None) -> DocumentConverter:
        option = PdfFormatOption(
            pipeline_options=self._pdf_options,
            backend_options=PdfBackendOptions(password=SecretStr(password)) if password else None,
        )
        if self.pdf_pipeline == "native":
            option.pipeline_cls = NativePdfPipeline
        return DocumentConverter(
            allowed_formats=list(set(_FORMATS.values())),
            format_options={InputFormat.PDF: option},
        )

    def inspect(self, data: bytes, filename: str, password: str | None = None) -> Inspection:
        """Cheap checks before any parsing: format, encryption, size and page limits."""
        if len(data) > self.limits.max_bytes:
            raise TooLarge(f"{len(data)} bytes exceeds the limit of {self.limits.max_bytes} bytes")
        kind = detect_kind(data, filename)
        pages = _pdf_page_count(data, password) if kind is DocumentKind.PDF else None
        if pages is not None and pages > self.limits.max_pages:
            raise TooLarge(f"{pages} pages exceeds the limit of {self.limits.max_pages} pages")
        return Inspection(kind=kind, pages=pages)

    def parse(
        self,
        data: bytes,
        filename: str,
        on_page: PageCallback | None = None,
        *,
        password: str | None = None,
        page_range: tuple[int, int] | None = None,
    ) -> ParsedDocument:
        """Parse a whole document, or pages ``page_range`` (1-based, inclusive) of a PDF."""
        inspection = self.inspect(data, filename, password)
        kind = inspection.kind
        stem = Path(filename).stem or "document"
        stream = DocumentStream(name=stem + _EXTENSIONS[kind], stream=io.BytesIO(data))
        converter = self._converter if not password else self._build(password)

        def progress(event: object) -> None:
            if on_page is not None and getattr(event, "kind", None) == "page_completed":
                on_page(event.completed_pages, event.total_pages)  # type: ignore[attr-defined]

        extra = {"page_range": page_range} if page_range else {}
        try:
            result = converter.convert(
                stream, raises_on_error=False, progress_callback=progress, **extra
            )
        except Exception as exc:  # docling raises many kinds on malformed input
            raise CorruptDocument(f"{kind.value} could not be read: {exc}") from exc
        if result.has_timeout_errors():
            raise ParseTimeout(
                f"parsing took longer than the budget of {self.limits.time_budget_s:.0f}s"
            )
        if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
            reasons = "; ".join(e.error_message for e in result.errors) or result.status.value
            raise CorruptDocument(f"{kind.value} could not be read: {reasons}")
        document = result.document
        # A page range may legitimately be blank (a run of figures); a whole document not.
        if page_range is None:
            ensure_has_text(document, kind)
        pages = len(document.pages) or None
        pipeline = self.pdf_pipeline if kind is DocumentKind.PDF else "simple"
        return ParsedDocument(document=document, kind=kind, pages=pages, pipeline=pipeline)


def ensure_has_text(document: DoclingDocument, kind: DocumentKind) -> None:
    if not document.export_to_text().strip():
        raise EmptyDocument(
            f"no text could be extracted from this {kind.value}"
            + (
                " (scanned pages need OCR, which this pipeline does not run)"
                if kind is DocumentKind.PDF
                else ""
            )
        )


def merge_parts(parts: Sequence[DoclingDocument], name: str) -> DoclingDocument:
    """Join page-range parts, given in page order, into one document."""
    merged = DoclingDocument.concatenate(list(parts))
    merged.name = name
    return merged


def _pdf_page_count(data: bytes, password: str | None) -> int:
    """Open the PDF with pdfium: catches encrypted and unreadable files before Docling,
    which may half-read them."""
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(data, password=password)
    except pypdfium2.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise EncryptedDocument(
                "the PDF is encrypted: the password given is wrong"
                if password
                else "the PDF is encrypted with a user password; upload it with its password"
            ) from exc
        raise CorruptDocument(f"the PDF could not be opened: {exc}") from exc
    try:
        pages = len(pdf)
    finally:
        pdf.close()
    if pages == 0:
        raise EmptyDocument("the PDF has no pages")
    return pages
