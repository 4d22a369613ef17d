"""Tables kept by the model-free PDF pipeline, against ICDAR 2013's human table annotations.

For each ICDAR 2013 PDF of the corpus (``pdf/icdar2013``), the product's parser (native
pipeline, ruled tables on) is compared with the competition's structure ground truth
(``groundtruth/icdar2013/*-str.xml``: every table's cells, their row and column spans and
their text, annotated by hand):

- tables: found (a table of ours on the same page covering at least half of the annotated
  one), missed, and tables of ours that match none (false positives);
- structure: the found tables whose rows and columns are the annotated ones;
- cells: the annotated non-empty cells whose text ours has at the same row and column
  (whitespace ignored), and ICDAR 2013's own measure, adjacency relations (each cell and
  its nearest non-empty neighbour to the right and below, as text pairs): precision, recall
  and F1 over all tables, missed ones included;
- cost: parse time with and without the table search (CPU seconds).

Then every other PDF of the corpus is parsed the same way, to count the tables kept where
nobody annotated any (each is listed, to be looked at).

Usage: ``python -m bench.table_quality [--corpus PATH] [--json OUT.json]``

This is a report, not a test: it prints figures and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from bench.parse_quality import MissingInput, default_corpus

if TYPE_CHECKING:
    from docling_core.types.doc import DoclingDocument

    from docindex.pipeline.parsing import DocumentParser

ICDAR_PDFS = "pdf/icdar2013"
ICDAR_TRUTH = "groundtruth/icdar2013"
OTHER_PDFS = ("pdf", "olmocr_bench/pdfs")
# A table of ours matches an annotated one on its page when it covers this share of it.
MATCH_COVER = 0.5

Box = tuple[float, float, float, float]  # l, b, r, t; points, bottom-left origin


@dataclass(frozen=True)
class Cell:
    row: int
    col: int
    end_row: int  # inclusive
    end_col: int
    text: str


@dataclass
class Annotated:
    """A table: its page, its cells and the box around them."""

    page: int
    cells: list[Cell]
    box: Box

    @property
    def rows(self) -> int:
        return max(c.end_row for c in self.cells) + 1

    @property
    def cols(self) -> int:
        return max(c.end_col for c in self.cells) + 1


@dataclass
class TableRow:
    document: str
    page: int
    annotated: str  # rows x cols
    found: str | None  # ours, rows x cols; None when missed
    same_structure: bool
    cells: int  # annotated non-empty cells
    cells_same: int  # of those, ours has the same text at the same row and column
    adjacency_precision: float
    adjacency_recall: float


@dataclass
class DocumentRow:
    document: str
    pages: int
    annotated: int
    found: int  # annotated tables matched
    kept: int  # our tables (len(document.tables))
    false_positives: int
    seconds_tables: float  # CPU seconds, table search on
    seconds_plain: float  # and off


@dataclass
class Result:
    tables: list[TableRow]
    documents: list[DocumentRow]
    annotated: int
    found: int
    false_positives: int
    same_structure: int
    cells: int
    cells_same: int
    adjacency_precision: float
    adjacency_recall: float
    adjacency_f1: float
    overhead: float  # CPU time with tables / without, minus 1, over the ICDAR PDFs
    elsewhere: list[dict[str, Any]] = field(default_factory=list)
    elsewhere_overhead: float = 0.0


# --------------------------------------------------------------------------- ground truth


def normalize(text: str) -> str:
    """Cell text as compared: without whitespace (some annotations drop the spaces between
    words, "Airpassengersrights")."""
    return re.sub(r"\s+", "", text)


def rotated_offsets(pdf: Path) -> dict[int, float]:
    """On a page with /Rotate 90 or 270 the annotations' y is that of the rotated page plus
    its width less its height (their tool kept the unrotated height): by page, what to
    subtract."""
    import pypdfium2

    offsets = {}
    document = pypdfium2.PdfDocument(pdf)
    try:
        for index in range(len(document)):
            page = document[index]
            if page.get_rotation() % 180 == 90:
                left, bottom, right, top = page.get_cropbox()
                offsets[index + 1] = (top - bottom) - (right - left)
            page.close()
    finally:
        document.close()
    return offsets


def read_truth(path: Path, offsets: dict[int, float] | None = None) -> list[Annotated]:
    """The tables of an ICDAR 2013 ``-str.xml`` file (one region a table; none span
    pages in this corpus), their boxes in Docling's page frame (``rotated_offsets``)."""
    offsets = offsets or {}
    tables = []
    for table in ET.parse(path).getroot().iter("table"):
        for region in table.iter("region"):
            cells, boxes = [], []
            for cell in region.iter("cell"):
                row, col = int(cell.get("start-row", 0)), int(cell.get("start-col", 0))
                cells.append(
                    Cell(
                        row,
                        col,
                        int(cell.get("end-row", row)),
                        int(cell.get("end-col", col)),
                        normalize(cell.findtext("content") or ""),
                    )
                )
                if (bb := cell.find("bounding-box")) is not None:
                    x1, x2 = float(bb.get("x1", 0)), float(bb.get("x2", 0))
                    y1, y2 = float(bb.get("y1", 0)), float(bb.get("y2", 0))
                    boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
            if cells and boxes:
                box = (
                    min(b[0] for b in boxes),
                    min(b[1] for b in boxes),
                    max(b[2] for b in boxes),
                    max(b[3] for b in boxes),
                )
                page = int(region.get("page", 1))
                shift = offsets.get(page, 0.0)
                box = (box[0], box[1] - shift, box[2], box[3] - shift)
                tables.append(Annotated(page, cells, box))
    return tables


def ours(document: DoclingDocument) -> list[Annotated]:
    """The document's tables in the same terms."""
    out = []
    for table in document.tables:
        prov = table.prov[0]
        bbox = prov.bbox.to_bottom_left_origin(document.pages[prov.page_no].size.height)
        cells = [
            Cell(
                c.start_row_offset_idx,
                c.start_col_offset_idx,
                c.end_row_offset_idx - 1,
                c.end_col_offset_idx - 1,
                normalize(c.text),
            )
            for c in table.data.table_cells
        ]
        out.append(Annotated(prov.page_no, cells, (bbox.l, bbox.b, bbox.r, bbox.t)))
    return out


# --------------------------------------------------------------------------- measures


def cover(inner: Box, outer: Box) -> float:
    """The share of ``inner``'s area inside ``outer``."""
    w = min(inner[2], outer[2]) - max(inner[0], outer[0])
    h = min(inner[3], outer[3]) - max(inner[1], outer[1])
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return max(w, 0) * max(h, 0) / area if area > 0 else 0.0


def adjacency(table: Annotated) -> Counter[tuple[str, str, str]]:
    """ICDAR 2013's adjacency relations: each non-empty cell with its nearest non-empty
    neighbour to the right (on each row it spans) and below (on each column it spans)."""
    at: dict[tuple[int, int], Cell] = {}
    for cell in table.cells:
        for r in range(cell.row, cell.end_row + 1):
            for c in range(cell.col, cell.end_col + 1):
                at[(r, c)] = cell
    pairs: set[tuple[Cell, Cell, str]] = set()
    for cell in table.cells:
        if not cell.text:
            continue
        for r in range(cell.row, cell.end_row + 1):
            c = cell.end_col + 1
            while (other := at.get((r, c))) is not None and not other.text:
                c += 1
            if other is not None:
                pairs.add((cell, other, "right"))
        for c in range(cell.col, cell.end_col + 1):
            r = cell.end_row + 1
            while (other := at.get((r, c))) is not None and not other.text:
                r += 1
            if other is not None:
                pairs.add((cell, other, "below"))
    return Counter((a.text, b.text, d) for a, b, d in pairs)


def same_cells(truth: Annotated, found: Annotated) -> int:
    """The annotated non-empty cells that ``found`` has, with the same text, at the same
    row and column."""
    by_place = {(c.row, c.col): c.text for c in found.cells}
    return sum(1 for c in truth.cells if c.text and by_place.get((c.row, c.col)) == c.text)


def match(truth: Sequence[Annotated], found: Sequence[Annotated]) -> list[Annotated | None]:
    """For each annotated table, the table of ours on its page that covers most of it (at
    least MATCH_COVER), each of ours used once."""
    used: set[int] = set()
    matched: list[Annotated | None] = []
    for table in truth:
        best, best_cover = None, MATCH_COVER
        for k, candidate in enumerate(found):
            if k in used or candidate.page != table.page:
                continue
            if (c := cover(table.box, candidate.box)) >= best_cover:
                best, best_cover = k, c
        if best is not None:
            used.add(best)
        matched.append(found[best] if best is not None else None)
    return matched


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


# --------------------------------------------------------------------------- runs


def parse_timed(parser: DocumentParser, path: Path) -> tuple[DoclingDocument | None, float]:
    from docindex.errors import DocumentError

    start = time.process_time()
    try:
        document = parser.parse(path.read_bytes(), path.name).document
    except DocumentError:
        document = None
    return document, time.process_time() - start


def run(corpus: Path, console: Console) -> Result:
    from docindex.pipeline.parsing import DocumentParser

    pdfs = sorted((corpus / ICDAR_PDFS).glob("*.pdf"))
    if not pdfs:
        raise MissingInput(f"no PDFs in {corpus / ICDAR_PDFS}")
    # OCR off: these PDFs have text layers, and the comparison is of the text layer's tables.
    with_tables = DocumentParser("native", ocr="off", tables=True)
    plain = DocumentParser("native", ocr="off", tables=False)
    rows: list[TableRow] = []
    documents: list[DocumentRow] = []
    relations_truth: Counter[tuple[str, str, str]] = Counter()
    relations_ours: Counter[tuple[str, str, str]] = Counter()
    relations_shared = 0
    for pdf in pdfs:
        truth_path = corpus / ICDAR_TRUTH / f"{pdf.stem}-str.xml"
        if not truth_path.exists():
            continue
        truth = read_truth(truth_path, rotated_offsets(pdf))
        document, seconds = parse_timed(with_tables, pdf)
        _, seconds_plain = parse_timed(plain, pdf)
        found = ours(document) if document is not None else []
        matched = match(truth, found)
        for table, mine in zip(truth, matched, strict=True):
            expected = adjacency(table)
            got = adjacency(mine) if mine is not None else Counter()
            shared = sum((expected & got).values())
            relations_truth += expected
            relations_ours += got
            relations_shared += shared
            rows.append(
                TableRow(
                    document=pdf.name,
                    page=table.page,
                    annotated=f"{table.rows}x{table.cols}",
                    found=f"{mine.rows}x{mine.cols}" if mine is not None else None,
                    same_structure=mine is not None
                    and (mine.rows, mine.cols) == (table.rows, table.cols),
                    cells=sum(1 for c in table.cells if c.text),
                    cells_same=same_cells(table, mine) if mine is not None else 0,
                    adjacency_precision=shared / sum(got.values()) if got else 0.0,
                    adjacency_recall=shared / sum(expected.values()) if expected else 0.0,
                )
            )
        hits = sum(m is not None for m in matched)
        unmatched = [f for f in found if not any(f is m for m in matched)]
        relations_ours += sum((adjacency(f) for f in unmatched), Counter())
        documents.append(
            DocumentRow(
                document=pdf.name,
                pages=len(document.pages) if document is not None else 0,
                annotated=len(truth),
                found=hits,
                kept=len(found),
                false_positives=len(unmatched),
                seconds_tables=round(seconds, 3),
                seconds_plain=round(seconds_plain, 3),
            )
        )
    precision = relations_shared / sum(relations_ours.values()) if relations_ours else 0.0
    recall = relations_shared / sum(relations_truth.values()) if relations_truth else 0.0
    on = sum(d.seconds_tables for d in documents)
    off = sum(d.seconds_plain for d in documents)
    elsewhere, elsewhere_on, elsewhere_off = run_elsewhere(corpus, with_tables, plain)
    return Result(
        tables=rows,
        documents=documents,
        annotated=len(rows),
        found=sum(r.found is not None for r in rows),
        false_positives=sum(d.false_positives for d in documents),
        same_structure=sum(r.same_structure for r in rows),
        cells=sum(r.cells for r in rows),
        cells_same=sum(r.cells_same for r in rows),
        adjacency_precision=precision,
        adjacency_recall=recall,
        adjacency_f1=_f1(precision, recall),
        overhead=on / off - 1 if off else 0.0,
        elsewhere=elsewhere,
        elsewhere_overhead=elsewhere_on / elsewhere_off - 1 if elsewhere_off else 0.0,
    )


def _other_pdfs(corpus: Path) -> Iterable[Path]:
    for sub in OTHER_PDFS:
        for path in sorted((corpus / sub).rglob("*.pdf")):
            if ICDAR_PDFS not in path.as_posix():
                yield path


def run_elsewhere(
    corpus: Path, with_tables: DocumentParser, plain: DocumentParser
) -> tuple[list[dict[str, Any]], float, float]:
    """The tables kept in the corpus's other PDFs (no annotations: listed to be looked at),
    and the CPU seconds of parsing them with and without the table search."""
    kept: list[dict[str, Any]] = []
    on = off = 0.0
    for path in _other_pdfs(corpus):
        document, seconds = parse_timed(with_tables, path)
        _, seconds_plain = parse_timed(plain, path)
        on, off = on + seconds, off + seconds_plain
        if document is None:
            continue
        for table in document.tables:
            header = [c.text for c in table.data.table_cells if c.column_header]
            kept.append(
                {
                    "document": path.relative_to(corpus).as_posix(),
                    "page": table.prov[0].page_no,
                    "size": f"{table.data.num_rows}x{table.data.num_cols}",
                    "header": " | ".join(header)[:80],
                }
            )
    return kept, on, off


# --------------------------------------------------------------------------- report


def render(console: Console, result: Result) -> None:
    table = Table(title="ICDAR 2013 tables, native pipeline (ruled tables kept)")
    for column in ("document", "page", "annotated", "ours", "cells same", "adjacency P / R"):
        table.add_column(column)
    for row in result.tables:
        table.add_row(
            row.document,
            str(row.page),
            row.annotated,
            row.found or "[red]missed[/red]",
            f"{row.cells_same}/{row.cells}",
            f"{row.adjacency_precision:.2f} / {row.adjacency_recall:.2f}",
        )
    console.print(table)
    docs = Table(title="per document")
    for column in ("document", "annotated", "found", "kept", "false +", "CPU s on / off"):
        docs.add_column(column)
    for d in result.documents:
        docs.add_row(
            d.document,
            str(d.annotated),
            str(d.found),
            str(d.kept),
            str(d.false_positives),
            f"{d.seconds_tables:.2f} / {d.seconds_plain:.2f}",
        )
    console.print(docs)
    console.print(
        f"tables found {result.found}/{result.annotated}, false positives "
        f"{result.false_positives}, same rows x columns {result.same_structure}/{result.found}; "
        f"cells with the same text in the same place {result.cells_same}/{result.cells} "
        f"({result.cells_same / max(result.cells, 1):.1%}); adjacency relations P "
        f"{result.adjacency_precision:.3f} R {result.adjacency_recall:.3f} F1 "
        f"{result.adjacency_f1:.3f}; table search CPU cost {result.overhead:+.0%}"
    )
    others = Table(title="tables kept in the corpus's other PDFs (no annotations)")
    for column in ("document", "page", "size", "header"):
        others.add_column(column)
    for kept in result.elsewhere:
        others.add_row(kept["document"], str(kept["page"]), kept["size"], kept["header"])
    console.print(others)
    console.print(f"table search CPU cost on those PDFs {result.elsewhere_overhead:+.0%}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.table_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--corpus", type=Path, help="the shared corpus (default: beside the repo)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    args = parser.parse_args(argv)
    console = Console()
    corpus = args.corpus or default_corpus()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("docling").setLevel(logging.ERROR)
    try:
        result = run(corpus, console)
    except MissingInput as exc:
        console.print(f"[yellow]tables skipped: {exc}[/yellow] (use --corpus or DOCINDEX_CORPUS)")
        return 0
    render(console, result)
    if args.json:
        report = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "corpus": str(corpus),
            "result": asdict(result),
        }
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        console.print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
