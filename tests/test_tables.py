"""Ruled tables on the model-free PDF pipeline (issue #15, "Tables kept"): a table drawn with
lines becomes a table item with its header, and chunks keep every row with that header;
anything that is not plainly a ruled table stays text.

The PDFs are written here, line by line, so each test says exactly what the page draws;
one real PDF (ICDAR 2013, tests/data) checks the tables against human annotations."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from docling_core.types.doc import CoordOrigin, DoclingDocument, TableItem, TextItem

from bench import table_quality
from bench.table_quality import (
    Annotated,
    Cell,
    adjacency,
    match,
    ours,
    read_truth,
    rotated_offsets,
    same_cells,
)
from docindex.config import Settings
from docindex.pipeline.chunking import DocumentChunker
from docindex.pipeline.parsing import DocumentParser
from docindex.spec import resolve_spec

from .helpers import DATA, unique, wait_for_run

# --------------------------------------------------------------------------- drawing PDFs

FONT_SIZE = 9


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text(x: float, y: float, words: str, size: float = FONT_SIZE) -> str:
    return f"BT /F1 {size} Tf {x:.2f} {y:.2f} Td ({_escaped(words)}) Tj ET\n"


def hline(x0: float, x1: float, y: float, style: str = "stroke") -> str:
    if style == "stroke":  # a stroked line
        return f"0.5 w {x0:.2f} {y:.2f} m {x1:.2f} {y:.2f} l S\n"
    return f"{x0:.2f} {y - 0.25:.2f} {x1 - x0:.2f} 0.5 re f\n"  # a thin filled rectangle


def vline(x: float, y0: float, y1: float, style: str = "stroke") -> str:
    if style == "stroke":
        return f"0.5 w {x:.2f} {y0:.2f} m {x:.2f} {y1:.2f} l S\n"
    return f"{x - 0.25:.2f} {y0:.2f} 0.5 {y1 - y0:.2f} re f\n"


def ruled_table(
    rows: list[list[str]],
    *,
    x: float = 72,
    top: float = 700,
    widths: tuple[float, ...] = (120, 80, 80, 80),
    row_height: float = 16,
    style: str = "stroke",
    vertical: bool = True,
) -> str:
    """A grid of ``rows`` with its text, each cell's left-aligned."""
    xs = [x]
    for width in widths:
        xs.append(xs[-1] + width)
    bottom = top - row_height * len(rows)
    out = [hline(xs[0], xs[-1], top - r * row_height, style) for r in range(len(rows) + 1)]
    if vertical:
        out += [vline(cx, bottom, top, style) for cx in xs]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            if cell:
                out.append(text(xs[c] + 4, top - (r + 1) * row_height + 5, cell))
    return "".join(out)


def pdf(*pages: str, rotate: int = 0, crop: tuple[float, ...] | None = None) -> bytes:
    """A PDF of US Letter pages drawing the given content streams (Helvetica as /F1)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    cropbox = f"/CropBox [{' '.join(map(str, crop))}]" if crop else ""
    for i, content in enumerate(pages):
        stream = content.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] {cropbox} /Rotate {rotate} "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


THRESHOLDS = [
    ["Pollutant", "Air kg/year", "Water kg/year", "Land kg/year"],
    ["Arsenic", "20", "5", "5"],
    ["Cadmium", "10", "5", "5"],
    ["Mercury", "10", "1", "1"],
]


def thresholds_page(**table: object) -> str:
    return (
        text(72, 740, "Release thresholds", 14)
        + text(72, 720, "Facilities report releases above these thresholds.")
        + ruled_table(THRESHOLDS, **table)  # type: ignore[arg-type]
        + text(72, 600, "Thresholds apply per facility and year.")
    )


@pytest.fixture(scope="module")
def parser() -> DocumentParser:
    return DocumentParser("native")


def grid_text(table: TableItem) -> list[list[str]]:
    return [[cell.text for cell in row] for row in table.data.grid]


def body_texts(document: DoclingDocument) -> list[str]:
    """The document in reading order: text items' text, a table as "<table>"."""
    out = []
    for item, _level in document.iterate_items():
        if isinstance(item, TableItem):
            out.append("<table>")
        elif isinstance(item, TextItem):
            out.append(item.text)
    return out


def characters(document: DoclingDocument) -> Counter[str]:
    """Every character of the document's text and table cells, whitespace aside."""
    texts = [t.text for t in document.texts]
    cells = [c.text for t in document.tables for c in t.data.table_cells]
    return Counter(re.sub(r"\s+", "", "".join(texts + cells)))


# --------------------------------------------------------------------------- tables kept


@pytest.mark.parametrize("style", ["stroke", "fill"])
@pytest.mark.parametrize("rotate", [0, 90])
def test_a_ruled_table_becomes_a_table_with_its_header(
    parser: DocumentParser, style: str, rotate: int
) -> None:
    content = thresholds_page(style=style)
    if rotate:  # a landscape page: turned for display, its content drawn turned back
        content = f"q 0 1 -1 0 612 0 cm 1 0 0 1 0 -180 cm\n{content}Q\n"
    data = pdf(content, rotate=rotate)
    document = parser.parse(data, "thresholds.pdf").document

    assert len(document.tables) == 1
    table = document.tables[0]
    assert grid_text(table) == THRESHOLDS
    header = {c.text for c in table.data.table_cells if c.column_header}
    assert header == set(THRESHOLDS[0])
    assert not any(c.column_header for c in table.data.table_cells if c.start_row_offset_idx)
    # In place of the text it had, where that text was in reading order.
    assert body_texts(document) == [
        "Release thresholds",
        "Facilities report releases above these thresholds.",
        "<table>",
        "Thresholds apply per facility and year.",
    ]
    plain = DocumentParser("native", tables=False).parse(data, "thresholds.pdf").document
    assert characters(document) == characters(plain)
    prov = table.prov[0]
    assert prov.page_no == 1 and prov.bbox.coord_origin is CoordOrigin.BOTTOMLEFT
    # The box drawn, x 72..432, y 636..700, as displayed (180 lower on the landscape page).
    box, down = prov.bbox, 180 if rotate else 0
    expected = (72, 636 - down, 432, 700 - down)
    assert (box.l, box.b, box.r, box.t) == pytest.approx(expected, abs=0.5)


def test_the_table_box_is_on_the_cropped_page(parser: DocumentParser) -> None:
    data = pdf(thresholds_page(), crop=(30, 40, 580, 760))
    (table,) = parser.parse(data, "cropped.pdf").document.tables
    box = table.prov[0].bbox
    assert (box.l, box.b, box.r, box.t) == pytest.approx((42, 596, 402, 660), abs=0.5)


def test_merged_cells_and_a_two_row_header(parser: DocumentParser) -> None:
    # "Threshold" spans the three value columns; "Pollutant" spans the two header rows.
    x, top, h = 72.0, 700.0, 16.0
    xs = [x, x + 120, x + 200, x + 280, x + 360]
    rows = 5
    content = hline(xs[0], xs[-1], top) + hline(xs[1], xs[-1], top - h)
    content += "".join(hline(xs[0], xs[-1], top - r * h) for r in range(2, rows + 1))
    content += vline(xs[0], top - rows * h, top) + vline(xs[1], top - rows * h, top)
    content += "".join(vline(cx, top - rows * h, top - h) for cx in xs[2:-1])
    content += vline(xs[-1], top - rows * h, top)
    content += text(x + 4, top - 2 * h + 13, "Pollutant") + text(
        xs[1] + 4, top - h + 5, "Threshold"
    )
    for c, words in enumerate(["Air", "Water", "Land"]):
        content += text(xs[c + 1] + 4, top - 2 * h + 5, words)
    for r, row in enumerate([["Arsenic", "20", "5", "5"], ["Cadmium", "10", "5", "5"]], 2):
        for c, words in enumerate(row):
            content += text(xs[c] + 4, top - (r + 1) * h + 5, words)
    content += text(x + 4, top - rows * h + 5, "Mercury") + text(xs[1] + 4, top - 5 * h + 5, "1")
    (table,) = parser.parse(pdf(content), "merged.pdf").document.tables

    spans = {(c.text, c.row_span, c.col_span, c.column_header) for c in table.data.table_cells}
    assert ("Pollutant", 2, 1, True) in spans and ("Threshold", 1, 3, True) in spans
    assert {("Air", 1, 1, True), ("Water", 1, 1, True), ("Arsenic", 1, 1, False)} <= spans
    assert (table.data.num_rows, table.data.num_cols) == (5, 4)


def test_side_by_side_tables_on_rotated_pages_match_their_annotations(
    parser: DocumentParser,
) -> None:
    """ICDAR 2013's eu-015: five ruled tables on two /Rotate 90 pages, three of them side
    by side (the parser's text lines run from one into the next), every cell as annotated
    by hand."""
    path = DATA / "pdf/icdar2013/eu-015.pdf"
    data = path.read_bytes()
    document = parser.parse(data, path.name).document
    truth = read_truth(DATA / "groundtruth/icdar2013/eu-015-str.xml", rotated_offsets(path))
    found = ours(document)
    matched = match(truth, found)

    assert len(found) == len(truth) == 5
    for annotated, mine in zip(truth, matched, strict=True):
        assert mine is not None
        assert (mine.rows, mine.cols) == (annotated.rows, annotated.cols)
        assert same_cells(annotated, mine) == sum(1 for c in annotated.cells if c.text)
    # Not a character lost or doubled, the text lines cut at the tables' borders included.
    plain = DocumentParser("native", tables=False).parse(data, path.name).document
    assert characters(document) == characters(plain)


# --------------------------------------------------------------------------- stays text


def frame_around_a_paragraph() -> str:
    return (
        hline(72, 400, 700)
        + hline(72, 400, 640)
        + vline(72, 640, 700)
        + vline(400, 640, 700)
        + text(80, 680, "A note in a box: nothing here is a table,")
        + text(80, 668, "it is a paragraph with a frame around it.")
    )


def whitespace_columns() -> str:
    out = ""
    for r, row in enumerate(THRESHOLDS):
        for c, words in enumerate(row):
            out += text(72 + [0, 120, 200, 280][c], 700 - 14 * r, words)
    return out


def not_a_grid() -> str:
    # An underlined heading, a margin bar and two lines of text.
    return (
        text(72, 700, "Release thresholds")
        + hline(72, 160, 697)
        + vline(60, 600, 700)
        + text(72, 680, "Arsenic 20 5 5")
        + text(72, 668, "Cadmium 10 5 5")
    )


def mostly_empty_grid() -> str:
    # A form to fill in: three of twelve cells hold text.
    empty = [["Pollutant", "Air kg/year", "", ""], ["Arsenic", "", "", ""], ["", "", "", ""]]
    return ruled_table(empty)


def columns_inside_cells() -> str:
    # A frame with one divider around a layout whose columns it does not draw.
    out = ruled_table([["", ""], ["", ""]], widths=(240, 240), row_height=30)
    for r, words in enumerate(
        [("Topic", "Enquiries", "Region", "Share"), ("EU", "3597", "EU", "12")]
    ):
        y = 700 - (r + 1) * 30 + 10
        for k, word in enumerate(words):
            out += text(76 + 240 * (k // 2) + 150 * (k % 2), y, word)
    return out


def plot_frame() -> str:
    # A chart's frame: a big plot area over a row of axis labels, one tick mark.
    xs = [72, 162, 252, 342, 432]
    out = hline(72, 432, 700) + hline(72, 432, 560) + hline(72, 432, 540) + hline(72, 90, 640)
    out += vline(72, 540, 700) + vline(432, 540, 700)
    out += "".join(vline(x, 540, 560) for x in xs[1:-1])
    out += text(200, 630, "Releases over time")
    out += "".join(text(x + 4, 545, str(2020 + k)) for k, x in enumerate(xs[:-1]))
    return out


def rules_through_words() -> str:
    # A grid drawn over running text: its rules cut words in two.
    out = ruled_table([["", "", "", ""]] * 3, row_height=16)
    for r in range(3):
        out += text(
            76, 700 - (r + 1) * 16 + 5, "facilities report releases above thresholds per year"
        )
    return out


def one_mark_everywhere() -> str:
    return ruled_table([["*"] * 4] * 4)


def horizontal_rules_only() -> str:
    # A booktabs table: rules above and below the header and at the end, no column rules.
    return ruled_table(THRESHOLDS, vertical=False)


@pytest.mark.parametrize(
    "content",
    [
        frame_around_a_paragraph,
        whitespace_columns,
        not_a_grid,
        mostly_empty_grid,
        columns_inside_cells,
        plot_frame,
        rules_through_words,
        one_mark_everywhere,
        horizontal_rules_only,
    ],
)
def test_what_is_not_plainly_a_ruled_table_stays_text(
    parser: DocumentParser, content: object
) -> None:
    data = pdf(content())  # type: ignore[operator]
    document = parser.parse(data, "page.pdf").document
    assert document.tables == []
    plain = DocumentParser("native", tables=False).parse(data, "page.pdf").document
    assert body_texts(document) == body_texts(plain)


def test_tables_follow_the_spec(parser: DocumentParser, settings: Settings) -> None:
    on, off = (
        resolve_spec(settings),
        resolve_spec(settings.model_copy(update={"pdf_tables": False})),
    )
    assert on.parser.tables and not off.parser.tables
    # Parses with and without tables are different artifacts.
    assert on.parser.variant("native") != off.parser.variant("native")
    data = pdf(thresholds_page())
    assert DocumentParser("native", tables=False).parse(data, "t.pdf").document.tables == []
    assert len(parser.parse(data, "t.pdf").document.tables) == 1


def test_adjacency_relations_and_a_missing_table_without_the_corpus(tmp_path: Path) -> None:
    # The bench's measure: each non-empty cell and its nearest non-empty neighbour to the
    # right and below, empty cells skipped, spans counted once per row or column.
    cells = [
        Cell(0, 0, 1, 0, "Topic"),  # spans two rows
        Cell(0, 1, 0, 1, "Count"),
        Cell(1, 1, 1, 1, ""),
        Cell(2, 0, 2, 0, "EU"),
        Cell(2, 1, 2, 1, "3.597"),
    ]
    relations = adjacency(Annotated(1, cells, (0, 0, 1, 1)))
    assert relations == Counter(
        {
            ("Topic", "Count", "right"): 1,
            ("Topic", "EU", "below"): 1,
            ("Count", "3.597", "below"): 1,
            ("EU", "3.597", "right"): 1,
        }
    )
    # No ICDAR PDFs: the report says so and exits 0.
    assert table_quality.main(["--corpus", str(tmp_path)]) == 0


# --------------------------------------------------------------------------- chunks

HEADER = "| Pollutant | Air kg/year | Water kg/year | Land kg/year |"


def long_table() -> list[list[str]]:
    names = [f"Substance {n:02d}" for n in range(1, 45)]
    return [THRESHOLDS[0]] + [
        [name, str(10 * k), str(k), str(k % 7)] for k, name in enumerate(names, 1)
    ]


def test_a_table_cut_into_chunks_repeats_its_header_in_each(parser: DocumentParser) -> None:
    rows = long_table()
    content = text(72, 760, "All thresholds", 14) + ruled_table(rows, top=740, row_height=15)
    document = parser.parse(pdf(content), "long.pdf").document
    (table,) = document.tables
    assert table.data.num_rows == len(rows)

    chunker = DocumentChunker(128)
    chunks = chunker.chunk(document)
    with_rows = [c for c in chunks if "| Substance" in c.text]
    assert len(with_rows) > 3
    seen: list[str] = []
    for chunk in with_rows:
        assert chunker.count_tokens(chunk.embed_text) <= 128
        lines = chunk.text.splitlines()
        start = lines.index(HEADER)  # the first chunk starts with the title
        assert lines[start + 1].startswith("| - |") or lines[start + 1].startswith("| -")
        seen += [line for line in lines[start + 2 :] if line.startswith("| Substance")]
    # Every row once, whole, in order.
    assert seen == [f"| {' | '.join(row)} |" for row in rows[1:]]


# --------------------------------------------------------------------------- the service


async def test_an_uploaded_table_is_found_row_with_header(api: httpx.AsyncClient) -> None:
    name = f"thresholds-{uuid.uuid4().hex[:6]}.pdf"
    response = await api.post(
        "/v1/documents", files=[("files", (name, unique(pdf(thresholds_page()))))]
    )
    assert response.status_code == 202, response.text
    run = await wait_for_run(api, response.json()["run_id"])
    assert run["status"] == "completed", run
    document_id = run["documents"][0]["document_id"]
    detail = (await api.get(f"/v1/documents/{document_id}")).json()
    assert detail["metadata"]["tables"] == 1

    hits = (
        await api.post(
            "/v1/search",
            json={"query": "Cadmium water", "mode": "keyword", "document_ids": [document_id]},
        )
    ).json()["results"]
    assert hits, "no chunk has the row"
    lines = hits[0]["text"].splitlines()
    assert HEADER in lines and "| Cadmium | 10 | 5 | 5 |" in lines
