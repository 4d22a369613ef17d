"""Document-level facts read off a parsed DoclingDocument."""

from __future__ import annotations

from docling_core.types.doc import DocItemLabel, DoclingDocument

from docindex.pipeline.pages import PageClass, page_ranges_text
from docindex.pipeline.parsing import page_classes, recovered_damage
from docindex.steps.models import DocumentMetadata, PageQuality

_MAX_HEADINGS = 50


def extract_metadata(document: DoclingDocument, kind: str, pipeline: str) -> DocumentMetadata:
    title: str | None = None
    headings: list[str] = []
    for item in document.texts:
        if item.label == DocItemLabel.TITLE and title is None:
            title = item.text.strip() or None
        elif item.label == DocItemLabel.SECTION_HEADER and len(headings) < _MAX_HEADINGS:
            headings.append(item.text.strip())
    if title is None and headings:
        title = headings[0]
    damage = recovered_damage(document)
    return DocumentMetadata(
        title=title,
        kind=kind,
        pages=len(document.pages) or None,
        pipeline=pipeline,
        headings=headings,
        tables=len(document.tables),
        pictures=len(document.pictures),
        text_items=len(document.texts),
        recovered=damage is not None,
        damage=damage,
        quality=quality_report(document),
    )


def quality_report(document: DoclingDocument) -> PageQuality | None:
    """What became of each page of a parsed PDF, with a warning naming the pages that give
    no text to the index; None for formats without pages."""
    classes = page_classes(document)
    if not classes:
        return None
    # Before OCR a page is "no text"; a document described without OCR leaves it empty.
    by = {c: sorted(p for p, k in classes.items() if k is c) for c in PageClass}
    empty = sorted(by[PageClass.EMPTY] + by[PageClass.BLANK] + by[PageClass.NO_TEXT])
    unreadable = by[PageClass.UNREADABLE]
    parts = []
    if empty:
        blank = by[PageClass.BLANK]
        parts.append(
            f"no text on page{'s' if len(empty) > 1 else ''} {page_ranges_text(empty)}"
            + (f" (blank: {page_ranges_text(blank)})" if blank else "")
        )
    if unreadable:
        parts.append(
            f"unreadable text layer (glyphs without characters) not indexed on "
            f"page{'s' if len(unreadable) > 1 else ''} {page_ranges_text(unreadable)}"
        )
    return PageQuality(
        pages=len(classes),
        text=len(by[PageClass.TEXT]),
        ocr=len(by[PageClass.OCR]),
        unreadable=len(unreadable),
        empty=len(empty),
        empty_pages=empty,
        blank_pages=by[PageClass.BLANK],
        unreadable_pages=unreadable,
        tables=len(document.tables),
        warning="; ".join(parts) or None,
    )
