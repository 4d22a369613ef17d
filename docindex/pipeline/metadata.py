"""Document-level facts read off a parsed DoclingDocument."""

from __future__ import annotations

from docling_core.types.doc import DocItemLabel, DoclingDocument

from docindex.pipeline.parsing import recovered_damage
from docindex.steps.models import DocumentMetadata

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
    )
