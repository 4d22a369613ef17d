"""What the CPU steps run in the cage (``docindex.cage``): every part that reads the
document's untrusted bytes, i.e. inspect (with its damage check), parse, and OCR.

Module-level functions, so a child process imports them by name. Each child builds a
parser per spec and limits once and keeps it for its later calls. ``report`` sends progress
to the step in the worker, which heartbeats it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from docindex.spec import ParserSpec

if TYPE_CHECKING:
    from docindex.pipeline.ocr import OcrPage
    from docindex.pipeline.parsing import DocumentParser, Inspection, ParsedDocument, ParseLimits

Report = Callable[[dict[str, Any]], None]

_parsers: dict[tuple[str, ParseLimits], DocumentParser] = {}
_lock = threading.Lock()


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


def warm(spec: ParserSpec, limits: ParseLimits, *, report: Report) -> None:
    """Build the parser before the first document (it loads Docling's pipelines)."""
    parser_for(spec, limits)


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
    data: bytes, pages: Sequence[int], password: str | None, *, report: Report
) -> list[OcrPage]:
    from docindex.pipeline.ocr import ocr_pages

    def on_page(done: int) -> None:
        report({"ocr_pages_done": done})

    return ocr_pages(data, pages, password=password, on_page=on_page)
