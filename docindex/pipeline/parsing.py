"""Parse bytes into a DoclingDocument, with typed errors for input that can't be parsed.

Plain functions and one class; Temporal appears nowhere in this module.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from docling.datamodel.backend_options import PdfBackendOptions
from docling.datamodel.base_models import ConversionStatus, DocumentStream, InputFormat
from docling.datamodel.pipeline_options import (
    NativePdfPipelineOptions,
    PdfPipelineOptions,
    RapidOcrOptions,
)
from docling.document_converter import DocumentConverter, PdfFormatOption
from docling.pipeline.native_pdf_pipeline import NativePdfPipeline
from docling_core.types.doc import (
    ContentLayer,
    DoclingDocument,
    GroupItem,
    GroupLabel,
    TableItem,
)
from docling_core.types.doc.document import BaseMeta, MetaUtils
from pydantic import SecretStr

if TYPE_CHECKING:
    from docindex.pipeline.ocr import OcrPage

from docindex.archives import ArchiveLimits, check_archive
from docindex.errors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ParseTimeout,
    TooLarge,
)
from docindex.filetypes import ZIP_MAGIC, DocumentKind, detect_kind
from docindex.pipeline.damage import find_damage
from docindex.pipeline.pages import PageClass, classify_text, has_ink, page_ranges_text
from docindex.pipeline.tables import keep_ruled_tables
from docindex.spec import resolve_pdf_pipeline as spec_pdf_pipeline

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
    """``auto`` as a run's spec resolves it; ``standard`` needs layout models on local disk."""
    pipeline = spec_pdf_pipeline(requested)
    artifacts = os.environ.get("DOCLING_ARTIFACTS_PATH")
    if pipeline == "standard" and not (artifacts and Path(artifacts).is_dir()):
        raise PipelineUnavailable(
            "the standard PDF pipeline needs Docling's layout models: set "
            "DOCLING_ARTIFACTS_PATH to a directory made by `docling-tools models download`"
        )
    return pipeline


@dataclass(frozen=True)
class ParseLimits:
    """What one document may cost this worker (its settings, not the run's spec)."""

    max_bytes: int = 200 * 1024 * 1024
    max_pages: int = 2000
    # Per conversion call (a whole document, or one page range of a big PDF).
    time_budget_s: float | None = 3600.0
    # DOCX/PPTX/XLSX: checked before any library opens them.
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)
    # A PDF stream inflating past this is a decompression bomb (a 16k x 16k RGB image
    # inflates to 0.75 GiB).
    max_stream_bytes: int = 1 << 30
    # Chunks of one document: past it the document is TooLarge, not 200k rows to embed.
    max_chunks: int = 20_000


@dataclass
class Inspection:
    kind: DocumentKind
    pages: int | None
    # What is damaged, when the file is damaged and the parser recovers such files.
    damage: str | None = None


@dataclass
class ParsedDocument:
    document: DoclingDocument
    kind: DocumentKind
    pages: int | None
    pipeline: str
    # Set when the file was damaged and parsed anyway (recover_damaged): what is damaged.
    damage: str | None = None


class DocumentParser:
    """Holds the DocumentConverters of one process: building them loads the pipelines."""

    def __init__(
        self,
        pdf_pipeline: str = "auto",
        *,
        limits: ParseLimits | None = None,
        ocr: str = "auto",
        table_structure: bool = True,
        tables: bool = True,
        recover_damaged: bool = False,
    ) -> None:
        self.pdf_pipeline = resolve_pdf_pipeline(pdf_pipeline)
        self.ocr = ocr
        # Ruled tables, on the native pipeline (the standard one has its table model).
        self.tables = tables and self.pdf_pipeline == "native"
        self.limits = limits or ParseLimits()
        # Strict by default: a damaged file parses "fine" but its text cannot be trusted.
        self.recover_damaged = recover_damaged
        if self.pdf_pipeline == "native":
            self._pdf_options: NativePdfPipelineOptions | PdfPipelineOptions = (
                # No page images: nothing downstream reads them, and PNG-encoding every page
                # cost ~30% of parse time and made the parsed JSON 8x bigger (bench figure 1).
                NativePdfPipelineOptions(
                    document_timeout=self.limits.time_budget_s, generate_page_images=False
                )
            )
        else:
            from docindex.pipeline.ocr import bundled_models

            self._pdf_options = PdfPipelineOptions(
                artifacts_path=os.environ["DOCLING_ARTIFACTS_PATH"],
                do_ocr=ocr != "off",
                # Named, not "auto": Docling's automatic choice silently skips OCR when it
                # finds no engine. RapidOCR with the models of its wheel needs nothing more.
                ocr_options=RapidOcrOptions(
                    force_full_page_ocr=ocr == "force",
                    **{k: str(v) for k, v in bundled_models().items()},
                ),
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

    def inspect(
        self,
        data: bytes,
        filename: str,
        password: str | None = None,
        *,
        check_damage: bool = True,
    ) -> Inspection:
        """Cheap checks before any parsing: format, encryption, size and page limits, and
        damage the parsers would paper over (raised as CorruptDocument unless recovering)."""
        if len(data) > self.limits.max_bytes:
            raise TooLarge(f"{len(data)} bytes exceeds the limit of {self.limits.max_bytes} bytes")
        if data.startswith(ZIP_MAGIC):  # before zipfile reads its directory
            check_archive(data, self.limits.archive)
        kind = detect_kind(data, filename)
        pages = _pdf_page_count(data, password) if kind is DocumentKind.PDF else None
        if pages is not None and pages > self.limits.max_pages:
            raise TooLarge(f"{pages} pages exceeds the limit of {self.limits.max_pages} pages")
        damage = find_damage(data, kind, self.limits.max_stream_bytes) if check_damage else None
        if damage is not None and not self.recover_damaged:
            raise CorruptDocument(
                f"{damage.reason}; set DOCINDEX_RECOVER_DAMAGED_FILES=true to index what "
                "can be recovered from such files"
            )
        if damage is not None:
            log.warning("%s: recovering a damaged file: %s", filename, damage.reason)
        return Inspection(kind=kind, pages=pages, damage=damage.reason if damage else None)

    def parse(
        self,
        data: bytes,
        filename: str,
        on_page: PageCallback | None = None,
        *,
        password: str | None = None,
        page_range: tuple[int, int] | None = None,
        damage_checked: bool = False,
    ) -> ParsedDocument:
        """Parse a whole document, or pages ``page_range`` (1-based, inclusive) of a PDF.

        ``damage_checked``: an inspect step already checked these bytes for damage."""
        # Page ranges always follow an inspect step that checked the whole file; checking
        # again would inflate every stream once more (about a tenth of a CPU worker's time
        # in the benchmark). Only a recovering parser checks again (the first range of a
        # split PDF), so the parsed document still records why it was recovered.
        first = page_range is None or page_range[0] == 1
        check_damage = (page_range is None and not damage_checked) or (
            self.recover_damaged and first
        )
        inspection = self.inspect(data, filename, password, check_damage=check_damage)
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
        if kind is DocumentKind.PDF:
            first, last = page_range or (1, inspection.pages or len(document.pages))
            classes = classify_pages(document, data, password, range(first, last + 1))
            if self.tables and self.ocr != "force":  # forced OCR replaces every page's text
                keep_ruled_tables(document, data, password, classes)
        # A page range may legitimately be blank (a run of figures); a whole document not,
        # unless OCR may yet find its text.
        if page_range is None and not self.pages_to_ocr(document):
            ensure_has_text(document, kind, ocr=self.ocr)
        if inspection.damage is not None:
            mark_recovered(document, inspection.damage)
        pages = len(document.pages) or None
        pipeline = self.pdf_pipeline if kind is DocumentKind.PDF else "simple"
        return ParsedDocument(
            document=document,
            kind=kind,
            pages=pages,
            pipeline=pipeline,
            damage=inspection.damage,
        )

    def pages_to_ocr(self, document: DoclingDocument) -> list[int]:
        return pages_to_ocr(document, self.ocr, self.pdf_pipeline)


def pages_to_ocr(document: DoclingDocument, ocr: str, pdf_pipeline: str) -> list[int]:
    """The pages of a parsed PDF (or page range) that OCR is to read, by the spec's mode:
    ``auto`` those with ink and no readable text; ``force`` every page (on the native
    pipeline: the standard one OCRs them itself); ``off`` none."""
    classes = page_classes(document)
    if ocr == "off" or not classes:
        return []
    if ocr == "force" and pdf_pipeline == "native":
        return sorted(p for p, c in classes.items() if c is not PageClass.BLANK)
    return sorted(p for p, c in classes.items() if c in (PageClass.NO_TEXT, PageClass.UNREADABLE))


def ensure_has_text(document: DoclingDocument, kind: DocumentKind, ocr: str = "auto") -> None:
    if any(
        (getattr(item, "text", None) or "").strip()
        or (isinstance(item, TableItem) and any(c.text.strip() for c in item.data.table_cells))
        for item, _level in document.iterate_items()
    ):
        return
    reason = ""
    if kind is DocumentKind.PDF:
        classes = page_classes(document)
        unread = [p for p, c in classes.items() if c not in (PageClass.TEXT, PageClass.BLANK)]
        if ocr == "off" and unread:
            several = len(unread) > 1
            reason = (
                f" (page{'s' if several else ''} {page_ranges_text(unread)} "
                f"{'have' if several else 'has'} no readable text layer and OCR is off: "
                "DOCINDEX_OCR=off)"
            )
        elif classes and all(c is PageClass.BLANK for c in classes.values()):
            reason = " (every page is blank)"
        elif classes:
            reason = " (OCR found no text either)"
    raise EmptyDocument(f"no text could be extracted from this {kind.value}{reason}")


def page_text(document: DoclingDocument) -> dict[int, str]:
    """Each page's text, from the items that sit on it."""
    texts: dict[int, list[str]] = {}
    for item, _level in document.iterate_items():
        text = getattr(item, "text", None)
        prov = getattr(item, "prov", None)
        if text and prov:
            texts.setdefault(prov[0].page_no, []).append(text)
    return {page: "\n".join(parts) for page, parts in texts.items()}


def classify_pages(
    document: DoclingDocument, data: bytes, password: str | None, pages: range
) -> dict[int, PageClass]:
    """Classify ``pages`` of a parsed PDF and record it on the document: text, no text (with
    ink: to OCR), blank (no ink), or unreadable (a text layer of glyph garbage, whose items
    are dropped here so the garbage is never indexed)."""
    import pypdfium2
    from docling.utils.locks import pypdfium2_lock

    from docindex.pipeline.ocr import drop_items, items_on_pages

    texts = page_text(document)
    classes = {p: classify_text(texts.get(p, "")) for p in pages}
    unreadable = [p for p, c in classes.items() if c is PageClass.UNREADABLE]
    if unreadable:
        drop_items(document, items_on_pages(document, unreadable, tables=True))
    no_text = [p for p, c in classes.items() if c is PageClass.NO_TEXT]
    if no_text:
        # pdfium is not thread-safe: every use holds Docling's lock (see ocr.render_page).
        with pypdfium2_lock:
            pdf = pypdfium2.PdfDocument(data, password=password)
            try:
                for p in no_text:
                    page = pdf[p - 1]
                    try:
                        if not has_ink(page):
                            classes[p] = PageClass.BLANK
                    finally:
                        page.close()
            finally:
                pdf.close()
    set_page_classes(document, classes)
    return classes


def merge_parts(parts: Sequence[DoclingDocument], name: str) -> DoclingDocument:
    """Join page-range parts, given in page order, into one document."""
    merged = DoclingDocument.concatenate(list(parts))
    merged.name = name
    # concatenate() drops the body's meta: carry the recovery note of the first range over,
    # and each range's page classes.
    damage = next((d for d in map(recovered_damage, parts) if d is not None), None)
    if damage is not None:
        mark_recovered(merged, damage)
    classes: dict[int, PageClass] = {}
    for part in parts:
        classes |= page_classes(part)
    if classes:
        set_page_classes(merged, classes)
    return merged


# Stored in the parsed document itself (body.meta allows namespaced custom fields), so the
# note travels with the parsed artifact to the metadata step, and to a reuse of it.
_RECOVERED_NAMESPACE, _RECOVERED_NAME = "docindex", "recovered_damage"


def mark_recovered(document: DoclingDocument, damage: str) -> None:
    """Record on ``document`` that it was parsed from a damaged file, and what was damaged."""
    if document.body.meta is None:
        document.body.meta = BaseMeta()
    document.body.meta.set_custom_field(_RECOVERED_NAMESPACE, _RECOVERED_NAME, damage)


def apply_ocr(document: DoclingDocument, pages: Sequence[OcrPage]) -> dict[int, PageClass]:
    """Put OCR's lines into ``document`` in place of what the pages had, and record the new
    page classes: OCRed when OCR read something, else empty (or unreadable, as they were)."""
    from docindex.pipeline.ocr import add_page_lines, drop_items, items_on_pages

    classes = page_classes(document)
    for page in sorted(pages, key=lambda p: p.page_no):
        if page.lines:
            drop_items(document, items_on_pages(document, [page.page_no], tables=True))
            add_page_lines(document, page)
            classes[page.page_no] = PageClass.OCR
        elif classes.get(page.page_no) is PageClass.NO_TEXT:
            classes[page.page_no] = PageClass.EMPTY
    set_page_classes(document, classes)
    return classes


def settle_pages(document: DoclingDocument) -> None:
    """A document described without (more) OCR: its pages waiting for OCR stay empty."""
    classes = page_classes(document)
    if any(c is PageClass.NO_TEXT for c in classes.values()):
        set_page_classes(
            document,
            {p: PageClass.EMPTY if c is PageClass.NO_TEXT else c for p, c in classes.items()},
        )


# Page classes ride in the parsed document, in the meta of a group of their own on the
# invisible layer: no export or chunker reads that layer (a body's meta is exported with its
# text), and the group survives the JSON round trip and ``concatenate`` (one per range).
_PAGES_GROUP, _PAGES_NAME = "docindex:page-classes", "page_classes"


def _page_class_groups(document: DoclingDocument) -> list[GroupItem]:
    return [g for g in document.groups if g.name == _PAGES_GROUP]


def set_page_classes(document: DoclingDocument, classes: dict[int, PageClass]) -> None:
    """Record on ``document`` what each page holds (see ``docindex.pipeline.pages``)."""
    if old := _page_class_groups(document):
        document.delete_items(node_items=old)
    group = document.add_group(
        name=_PAGES_GROUP, label=GroupLabel.UNSPECIFIED, content_layer=ContentLayer.INVISIBLE
    )
    group.meta = BaseMeta()
    value = {str(p): c.value for p, c in sorted(classes.items())}
    group.meta.set_custom_field(_RECOVERED_NAMESPACE, _PAGES_NAME, value)


def page_classes(document: DoclingDocument) -> dict[int, PageClass]:
    """What each page of a parsed PDF holds; empty for other formats and older parses."""
    key = MetaUtils.create_meta_field_name(namespace=_RECOVERED_NAMESPACE, name=_PAGES_NAME)
    classes: dict[int, PageClass] = {}
    for group in _page_class_groups(document):
        value = group.meta.get_custom_part().get(key) if group.meta is not None else None
        if isinstance(value, dict):
            classes |= {int(p): PageClass(c) for p, c in value.items()}
    return classes


def recovered_damage(document: DoclingDocument) -> str | None:
    """What was damaged in the file ``document`` was recovered from; None if it was whole."""
    if document.body.meta is None:
        return None
    key = MetaUtils.create_meta_field_name(namespace=_RECOVERED_NAMESPACE, name=_RECOVERED_NAME)
    value = document.body.meta.get_custom_part().get(key)
    return value if isinstance(value, str) else None


def _pdf_page_count(data: bytes, password: str | None) -> int:
    """Open the PDF with pdfium: catches encrypted and unreadable files before Docling,
    which may half-read them."""
    import pypdfium2
    from docling.utils.locks import pypdfium2_lock

    # pdfium is not thread-safe (two threads in it at once abort the process): Docling's lock.
    with pypdfium2_lock:
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
