"""OCR of PDF pages: render with pdfium, read with RapidOCR, put the lines into the
DoclingDocument with their page and bounding box, so chunks keep their pages.

RapidOCR's wheel carries its ONNX models (PP-OCRv6 detection and recognition, a direction
classifier), so OCR works on a fresh machine with no system package and no download. It was
measured against Tesseract on pages whose text layer is known (docs/decisions.md, "OCR
engine"): more words right, about five times the CPU.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from docling_core.types.doc import (
    BoundingBox,
    CoordOrigin,
    DocItemLabel,
    DoclingDocument,
    NodeItem,
    ProvenanceItem,
    TableItem,
    TextItem,
)
from docling_core.types.doc.document import GroupItem
from pydantic import BaseModel

log = logging.getLogger(__name__)

# Pages are rendered at this resolution for OCR: RapidOCR reads body text at 150-200 dpi as
# well as at 300, for half the pixels of 300 (docs/decisions.md).
OCR_DPI = 200
# Lines RapidOCR is less sure of are dropped (its own default).
MIN_LINE_SCORE = 0.5


class OcrLine(BaseModel):
    """One line of OCR text; its box in PDF points, origin bottom-left as Docling's."""

    text: str
    l: float  # noqa: E741 (Docling's names for a box's sides)
    t: float
    r: float
    b: float
    score: float


class OcrPage(BaseModel):
    page_no: int
    width: float
    height: float
    lines: list[OcrLine]


_engines: dict[int, Any] = {}
_engine_lock = threading.Lock()


def bundled_models() -> dict[str, Path]:
    """The ONNX models inside the rapidocr wheel (for Docling's RapidOcrOptions, which would
    otherwise look for them under DOCLING_ARTIFACTS_PATH)."""
    import rapidocr

    models = Path(rapidocr.__file__).parent / "models"
    return {
        "det_model_path": models / "PP-OCRv6_det_small.onnx",
        "rec_model_path": models / "PP-OCRv6_rec_small.onnx",
        "cls_model_path": models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    }


def engine(threads: int = 0) -> Any:
    """The process's RapidOCR, loaded on first use (about a second), with ``threads``
    threads for onnxruntime's operators (0: one per core, onnxruntime's default)."""
    with _engine_lock:
        if threads not in _engines:
            from rapidocr import RapidOCR

            params: dict[str, Any] = {"Global.log_level": "error"}
            if threads > 0:
                params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            _engines[threads] = RapidOCR(params=params)
        return _engines[threads]


def threads_per_process(processes: int) -> int:
    """onnxruntime threads for each of ``processes`` processes that OCR at once: their
    share of the cores. Its threads spin while they wait for work, so more threads than
    cores burn CPU for nothing: on two cores, two processes OCRing at once with two threads
    each spent half again the CPU seconds and twice the wall time of one thread each
    (docs/benchmarks.md)."""
    return max(1, len(os.sched_getaffinity(0)) // max(1, processes))


# One OCR at a time per process: its threads already spread one page over its cores, and
# two pages at once would only thrash them.
_ocr_lock = threading.Lock()


def ocr_pages(
    data: bytes,
    pages: Sequence[int],
    *,
    password: str | None = None,
    on_page: Callable[[int], None] | None = None,
    threads: int = 0,
) -> list[OcrPage]:
    """OCR ``pages`` (1-based) of a PDF with ``threads`` threads (0: one per core);
    ``on_page(done)`` after each."""
    import numpy as np

    results: list[OcrPage] = []
    scale = OCR_DPI / 72
    for done, page_no in enumerate(pages, 1):
        image = render_page(data, page_no, scale, password=password)
        width, height = image.shape[1] / scale, image.shape[0] / scale
        with _ocr_lock:
            result = engine(threads)(np.ascontiguousarray(image))
        lines = _lines(result, scale, height)
        results.append(OcrPage(page_no=page_no, width=width, height=height, lines=lines))
        if on_page is not None:
            on_page(done)
    return results


def render_page(data: bytes, page_no: int, scale: float, *, password: str | None = None) -> Any:
    """One page as an RGB array. pdfium is not thread-safe and aborts the process when two
    threads use it at once: every use holds Docling's lock, which its own backends hold."""
    import numpy as np
    import pypdfium2
    from docling.utils.locks import pypdfium2_lock

    with pypdfium2_lock:
        pdf = pypdfium2.PdfDocument(data, password=password)
        try:
            page = pdf[page_no - 1]
            try:
                bitmap = page.render(scale=scale)
                try:
                    # A copy (convert copies): the bitmap's memory is pdfium's, freed below.
                    return np.asarray(bitmap.to_pil().convert("RGB"))
                finally:
                    bitmap.close()
            finally:
                page.close()
        finally:
            pdf.close()


def _lines(result: Any, scale: float, page_height: float) -> list[OcrLine]:
    if result is None or getattr(result, "txts", None) is None:
        return []
    lines = []
    for box, text, score in zip(result.boxes, result.txts, result.scores, strict=True):
        text = " ".join(str(text).split())
        if not text or float(score) < MIN_LINE_SCORE:
            continue
        xs = [float(p[0]) / scale for p in box]
        ys = [float(p[1]) / scale for p in box]
        lines.append(
            OcrLine(
                text=text,
                l=min(xs),
                r=max(xs),
                t=page_height - min(ys),
                b=page_height - max(ys),
                score=round(float(score), 3),
            )
        )
    return reading_order(lines)


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Order lines for reading by recursive XY-cut: split the lines at the widest empty band
    across them, horizontal or vertical, and read top before bottom, left before right. A
    two-column page is read column by column (the gutter is wider than any gap between
    lines), a heading above the columns first."""
    if len(lines) <= 1:
        return list(lines)
    # Top-left origin for the sweep: y grows downwards.
    best: tuple[float, list[OcrLine], list[OcrLine]] | None = None
    for start, end in ((lambda x: -x.t, lambda x: -x.b), (lambda x: x.l, lambda x: x.r)):
        ordered = sorted(lines, key=start)
        reach = end(ordered[0])
        for i in range(1, len(ordered)):
            gap = start(ordered[i]) - reach
            if gap > 0 and (best is None or gap > best[0]):
                best = (gap, ordered[:i], ordered[i:])
            reach = max(reach, end(ordered[i]))
    if best is None:
        return sorted(lines, key=lambda x: (-x.t, x.l))
    return reading_order(best[1]) + reading_order(best[2])


def ocr_text(page: OcrPage) -> str:
    return "\n".join(line.text for line in page.lines)


def _page_of(item: NodeItem, document: DoclingDocument) -> int | None:
    """The first page an item (or, for a group, its first descendant) is on."""
    prov = getattr(item, "prov", None)
    if prov:
        return prov[0].page_no
    for child in getattr(item, "children", []):
        page = _page_of(child.resolve(document), document)
        if page is not None:
            return page
    return None


def items_on_pages(
    document: DoclingDocument, pages: Iterable[int], *, tables: bool = False
) -> list[NodeItem]:
    """The text items (and with ``tables``, the tables) on ``pages``; innermost first is not
    needed: Docling deletes an item's children with it."""
    wanted = set(pages)
    kinds: tuple[type, ...] = (TextItem, TableItem) if tables else (TextItem,)
    found = []
    for item, _level in document.iterate_items(with_groups=False):
        if isinstance(item, kinds) and item.prov and item.prov[0].page_no in wanted:
            found.append(item)
    return found


def drop_items(document: DoclingDocument, items: Sequence[NodeItem]) -> None:
    # A caption or cell may sit under a table or picture already going: delete each once.
    doomed = {item.self_ref for item in items}
    top = [
        item
        for item in items
        if not (
            item.parent is not None
            and item.parent.cref in doomed
            and not isinstance(item.parent.resolve(document), GroupItem)
        )
    ]
    if top:
        document.delete_items(node_items=top)


def add_page_lines(document: DoclingDocument, page: OcrPage) -> int:
    """Put one page's OCR lines into ``document`` where that page's content belongs (after
    the items of earlier pages, before those of later ones). Returns the lines added."""
    if not page.lines:
        return 0
    anchor = next(
        (
            child.resolve(document)
            for child in document.body.children
            if (p := _page_of(child.resolve(document), document)) is not None and p > page.page_no
        ),
        None,
    )
    for line in page.lines:
        prov = ProvenanceItem(
            page_no=page.page_no,
            bbox=BoundingBox(
                l=line.l, t=line.t, r=line.r, b=line.b, coord_origin=CoordOrigin.BOTTOMLEFT
            ),
            charspan=(0, len(line.text)),
        )
        if anchor is None:
            document.add_text(label=DocItemLabel.TEXT, text=line.text, prov=prov)
        else:
            document.insert_text(
                sibling=anchor, label=DocItemLabel.TEXT, text=line.text, prov=prov, after=False
            )
    return len(page.lines)
