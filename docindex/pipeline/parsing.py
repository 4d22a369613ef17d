"""Parse bytes into a DoclingDocument, with typed errors for input that can't be parsed.

Plain functions and one class; Temporal appears nowhere in this module.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from docling.datamodel.base_models import ConversionStatus, DocumentStream, InputFormat
from docling.datamodel.pipeline_options import NativePdfPipelineOptions, PdfPipelineOptions
from docling.document_converter import DocumentConverter, PdfFormatOption
from docling.pipeline.native_pdf_pipeline import NativePdfPipeline
from docling_core.types.doc import DoclingDocument

from docindex.errors import CorruptDocument, EmptyDocument, EncryptedDocument
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


@dataclass
class ParsedDocument:
    document: DoclingDocument
    kind: DocumentKind
    pages: int | None
    pipeline: str


class DocumentParser:
    """Holds one DocumentConverter per process: building it loads the pipelines."""

    def __init__(self, pdf_pipeline: str = "auto") -> None:
        self.pdf_pipeline = resolve_pdf_pipeline(pdf_pipeline)
        if self.pdf_pipeline == "native":
            pdf_option = PdfFormatOption(
                pipeline_cls=NativePdfPipeline, pipeline_options=NativePdfPipelineOptions()
            )
        else:
            pdf_option = PdfFormatOption(
                pipeline_options=PdfPipelineOptions(
                    artifacts_path=os.environ["DOCLING_ARTIFACTS_PATH"]
                )
            )
        self._converter = DocumentConverter(
            allowed_formats=list(set(_FORMATS.values())),
            format_options={InputFormat.PDF: pdf_option},
        )

    def parse(
        self, data: bytes, filename: str, on_page: PageCallback | None = None
    ) -> ParsedDocument:
        kind = detect_kind(data, filename)
        if kind is DocumentKind.PDF:
            _check_pdf_opens(data)
        stem = Path(filename).stem or "document"
        stream = DocumentStream(name=stem + _EXTENSIONS[kind], stream=io.BytesIO(data))

        def progress(event: object) -> None:
            if on_page is not None and getattr(event, "kind", None) == "page_completed":
                on_page(event.completed_pages, event.total_pages)  # type: ignore[attr-defined]

        try:
            result = self._converter.convert(
                stream, raises_on_error=False, progress_callback=progress
            )
        except Exception as exc:  # docling raises many kinds on malformed input
            raise CorruptDocument(f"{kind.value} could not be read: {exc}") from exc
        if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
            reasons = "; ".join(e.error_message for e in result.errors) or result.status.value
            raise CorruptDocument(f"{kind.value} could not be read: {reasons}")
        document = result.document
        if not document.export_to_text().strip():
            raise EmptyDocument(
                f"no text could be extracted from this {kind.value}"
                + (
                    " (scanned pages need OCR, which this pipeline does not run)"
                    if kind is DocumentKind.PDF
                    else ""
                )
            )
        pages = len(document.pages) or None
        pipeline = self.pdf_pipeline if kind is DocumentKind.PDF else "simple"
        return ParsedDocument(document=document, kind=kind, pages=pages, pipeline=pipeline)


def _check_pdf_opens(data: bytes) -> None:
    """Catch encrypted and unreadable PDFs before Docling, which may half-read them."""
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise EncryptedDocument("the PDF is encrypted with a user password") from exc
        raise CorruptDocument(f"the PDF could not be opened: {exc}") from exc
    try:
        if len(pdf) == 0:
            raise EmptyDocument("the PDF has no pages")
    finally:
        pdf.close()
