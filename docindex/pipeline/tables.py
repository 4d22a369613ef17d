"""Ruled tables on the model-free PDF pipeline.

The native pipeline turns every text line of a PDF into a text item, so a table comes out as
a heap of cell fragments whose rows and columns are lost. Where the PDF draws the table's
grid (ruling lines, or thin filled rectangles used as lines), the grid says exactly which
words belong to which cell: this module finds such grids and puts a ``TableItem`` in place of
the text items inside, but only when the table is plausible:

- at least 2 rows and 2 columns, every merged cell a rectangle of the grid, no cell holding
  columns of its own (words on a line far apart);
- mostly filled: at least half of its cells hold text, at most half of it merged cells, and
  not one mark repeated in every cell;
- the same text as the items it replaces (no character gained or lost), and no rule
  cutting through a word. A text line running across the table's border (the parser joins
  words across narrow gaps, such as from one table into the next) is cut there, when its
  words account for its text exactly.

Anything else stays text. Tables drawn without lines (whitespace-aligned, or with horizontal
rules only) are left to the layout pipeline's table model (TableFormer).

The rules come from pdfium (its path objects, cheap to walk), the words from docling-parse
(the parser the native pipeline itself uses, so the text matches the items it replaces), read
again only on the pages where a grid holds text. A table's first row is its column header,
with the rows under it when its cells span columns (group headers over sub-headers).

Coordinates are those of Docling's provenance: points, bottom-left origin, relative to the
crop box, after the page's /Rotate.
"""

from __future__ import annotations

import bisect
import ctypes
import io
import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from docling_core.types.doc import (
    BoundingBox,
    CoordOrigin,
    DoclingDocument,
    NodeItem,
    ProvenanceItem,
    RefItem,
    TableCell,
    TableData,
    TextItem,
)

from docindex.pipeline.pages import PageClass

log = logging.getLogger(__name__)

# Points. Rules closer than SNAP are one rule; a rule is a path (or subpath) thinner than
# THIN and at least MIN_RULE long; boundaries closer than MIN_BAND are one boundary.
SNAP = 2.0
THIN = 2.5
MIN_RULE = 3.0
MIN_BAND = 3.0
# An edge between two grid cells is ruled when rules cover this share of it.
EDGE_COVERED = 0.7
# "Mostly filled": the share of cells that must hold text.
MIN_FILLED = 0.5
# The share of the grid that merged cells may cover.
MAX_MERGED = 0.5
# Words of one line in a cell further apart than this many line heights are in columns
# the grid does not draw (a frame around a layout, or around a borderless table).
COLUMN_GAP = 3.0
# A word belongs in one cell: this share of its box must lie inside it.
WORD_INSIDE = 0.8
# Pages drawing more path segments than this are charts or drawings, not tables.
MAX_SEGMENTS = 20_000
# A path whose first segments are mostly curves is not walked further.
CURVES_SAMPLE = 16


@dataclass(frozen=True)
class Rule:
    """A horizontal (``pos`` = y, from ``start`` to ``end`` in x) or vertical (``pos`` = x,
    ``start``..``end`` in y) line."""

    horizontal: bool
    pos: float
    start: float
    end: float


@dataclass(frozen=True)
class Word:
    text: str
    l: float  # noqa: E741
    b: float
    r: float
    t: float

    @property
    def cx(self) -> float:
        return (self.l + self.r) / 2

    @property
    def cy(self) -> float:
        return (self.b + self.t) / 2


@dataclass
class GridCell:
    row: int
    col: int
    row_span: int
    col_span: int
    words: list[Word] = field(default_factory=list)

    @property
    def text(self) -> str:
        return _cell_text(self.words)


@dataclass
class Grid:
    """Column boundaries left to right, row boundaries top to bottom (y falling), and the
    cells (merged where no rule separates base cells)."""

    xs: list[float]
    ys: list[float]
    cells: list[GridCell]

    @property
    def rows(self) -> int:
        return len(self.ys) - 1

    @property
    def cols(self) -> int:
        return len(self.xs) - 1

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """l, b, r, t."""
        return self.xs[0], self.ys[-1], self.xs[-1], self.ys[0]

    def cell_box(self, cell: GridCell) -> tuple[float, float, float, float]:
        return (
            self.xs[cell.col],
            self.ys[cell.row + cell.row_span],
            self.xs[cell.col + cell.col_span],
            self.ys[cell.row],
        )


# --------------------------------------------------------------------------- rules (pdfium)


def _to_frame(
    x: float, y: float, crop: tuple[float, float, float, float], rotation: int
) -> tuple[float, float]:
    """PDF user space to Docling's page frame: relative to the crop box, after /Rotate
    (clockwise), bottom-left origin."""
    left, bottom, right, top = crop
    if rotation == 90:
        return y - bottom, right - x
    if rotation == 180:
        return right - x, top - y
    if rotation == 270:
        return top - y, x - left
    return x - left, y - bottom


def page_rules(page: object) -> list[Rule] | None:
    """The horizontal and vertical lines a pdfium page draws, in Docling's page frame; None
    when the page draws too much to be looked at."""
    import pypdfium2.raw as pdfium

    raw = page.raw  # type: ignore[attr-defined]
    crop = tuple(page.get_cropbox())  # type: ignore[attr-defined]
    rotation = int(page.get_rotation()) % 360  # type: ignore[attr-defined]
    rules: list[Rule] = []
    budget = [MAX_SEGMENTS]

    form, path = pdfium.FPDF_PAGEOBJ_FORM, pdfium.FPDF_PAGEOBJ_PATH
    get_type, matrix = pdfium.FPDFPageObj_GetType, pdfium.FS_MATRIX()

    def walk(objects: Iterable[object], parent: tuple[float, ...]) -> bool:
        for obj in objects:
            kind = get_type(obj)
            if kind not in (form, path):
                continue
            if not pdfium.FPDFPageObj_GetMatrix(obj, ctypes.byref(matrix)):
                continue
            m = _compose((matrix.a, matrix.b, matrix.c, matrix.d, matrix.e, matrix.f), parent)
            if kind == form:
                count = pdfium.FPDFFormObj_CountObjects(obj)
                if not walk((pdfium.FPDFFormObj_GetObject(obj, k) for k in range(count)), m):
                    return False
            elif not _path_rules(obj, m, parent, rules, budget):
                return False
        return True

    count = pdfium.FPDFPage_CountObjects(raw)
    identity = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    if not walk((pdfium.FPDFPage_GetObject(raw, k) for k in range(count)), identity):
        return None
    framed = []
    for rule in rules:
        if rule.horizontal:
            a = _to_frame(rule.start, rule.pos, crop, rotation)
            b = _to_frame(rule.end, rule.pos, crop, rotation)
        else:
            a = _to_frame(rule.pos, rule.start, crop, rotation)
            b = _to_frame(rule.pos, rule.end, crop, rotation)
        framed.append(_rule(a, b))
    return [r for r in framed if r is not None]


def _compose(m: tuple[float, ...], parent: tuple[float, ...]) -> tuple[float, ...]:
    """``m`` then ``parent`` (PDF matrices [a b c d e f], row vectors)."""
    a, b, c, d, e, f = m
    pa, pb, pc, pd, pe, pf = parent
    return (
        a * pa + b * pc,
        a * pb + b * pd,
        c * pa + d * pc,
        c * pb + d * pd,
        e * pa + f * pc + pe,
        e * pb + f * pd + pf,
    )


def _transform(
    m: tuple[float, ...], box: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """The bounding box of ``box`` (l, b, r, t) under matrix ``m``."""
    a, b, c, d, e, f = m
    l, bottom, r, t = box  # noqa: E741
    xs = [x * a + y * c + e for x in (l, r) for y in (bottom, t)]
    ys = [x * b + y * d + f for x in (l, r) for y in (bottom, t)]
    return min(xs), min(ys), max(xs), max(ys)


def _thin_rule(box: tuple[float, float, float, float]) -> Rule | None:
    """The rule a thin box draws, along its long side; None if it is not one."""
    l, b, r, t = box  # noqa: E741
    width, height = r - l, t - b
    if min(width, height) > THIN or max(width, height) < MIN_RULE:
        return None
    if width >= height:
        return Rule(True, (b + t) / 2, l, r)
    return Rule(False, (l + r) / 2, b, t)


def _path_rules(
    obj: object,
    m: tuple[float, ...],
    parent: tuple[float, ...],
    rules: list[Rule],
    budget: list[int],
) -> bool:
    """Add the rules one path object draws: its thin subpaths (filled or stroked), and the
    straight axis-aligned segments of a stroked path. False when over the page's budget.
    ``m``: the path's matrix to page space; ``parent``: that of the form holding it."""
    import pypdfium2.raw as pdfium

    fill, stroke = ctypes.c_int(0), ctypes.c_int(0)
    if not pdfium.FPDFPath_GetDrawMode(obj, ctypes.byref(fill), ctypes.byref(stroke)):
        return True
    if not fill.value and not stroke.value:
        return True  # a clipping path: draws nothing
    # Most paths are settled by their bounds alone: too small to be a rule, or one thin
    # line or bar (a rule, however many segments draw it).
    bl, bb, br, bt = ctypes.c_float(), ctypes.c_float(), ctypes.c_float(), ctypes.c_float()
    if pdfium.FPDFPageObj_GetBounds(
        obj, ctypes.byref(bl), ctypes.byref(bb), ctypes.byref(br), ctypes.byref(bt)
    ):
        box = _transform(parent, (bl.value, bb.value, br.value, bt.value))
        if max(box[2] - box[0], box[3] - box[1]) < MIN_RULE:
            return True
        if (rule := _thin_rule(box)) is not None:
            rules.append(rule)
            return True
    count = pdfium.FPDFPath_CountSegments(obj)
    budget[0] -= max(count, 0)
    if budget[0] < 0:
        return False
    a, b, c, d, e, f = m
    subpaths: list[list[tuple[float, float]]] = []
    curved: list[bool] = []
    x, y = ctypes.c_float(), ctypes.c_float()
    px, py = ctypes.byref(x), ctypes.byref(y)
    get_segment, get_point = pdfium.FPDFPath_GetPathSegment, pdfium.FPDFPathSegment_GetPoint
    get_type, get_close = pdfium.FPDFPathSegment_GetType, pdfium.FPDFPathSegment_GetClose
    moveto, bezierto = pdfium.FPDF_SEGMENT_MOVETO, pdfium.FPDF_SEGMENT_BEZIERTO
    curves = 0
    for k in range(count):
        if k == CURVES_SAMPLE and 2 * curves > k:
            return True  # mostly curves (handwriting, a plot's line): no rule worth the walk
        segment = get_segment(obj, k)
        if not get_point(segment, px, py):
            continue
        point = (x.value * a + y.value * c + e, x.value * b + y.value * d + f)
        kind = get_type(segment)
        if kind == moveto or not subpaths:
            subpaths.append([point])
            curved.append(False)
        else:
            subpaths[-1].append(point)
            if kind == bezierto:
                curved[-1] = True
                curves += 1
        if get_close(segment) and len(subpaths[-1]) > 1:
            subpaths[-1].append(subpaths[-1][0])
    for points, is_curved in zip(subpaths, curved, strict=True):
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        if (rule := _thin_rule((min(xs), min(ys), max(xs), max(ys)))) is not None:
            rules.append(rule)
        elif stroke.value and not is_curved:
            for p, q in itertools.pairwise(points):
                if (rule := _rule(p, q)) is not None:
                    rules.append(rule)
    return True


def _rule(p: tuple[float, float], q: tuple[float, float]) -> Rule | None:
    (x0, y0), (x1, y1) = p, q
    if abs(y1 - y0) <= 0.5 and abs(x1 - x0) >= MIN_RULE:
        return Rule(True, (y0 + y1) / 2, min(x0, x1), max(x0, x1))
    if abs(x1 - x0) <= 0.5 and abs(y1 - y0) >= MIN_RULE:
        return Rule(False, (x0 + x1) / 2, min(y0, y1), max(y0, y1))
    return None


# --------------------------------------------------------------------------- grids


def merge_rules(rules: Iterable[Rule]) -> list[Rule]:
    """Rules on one line (within SNAP) that touch or overlap become one."""
    merged: list[Rule] = []
    for horizontal in (True, False):
        group = sorted((r for r in rules if r.horizontal is horizontal), key=lambda r: r.pos)
        lines: list[list[Rule]] = []
        for rule in group:
            if lines and rule.pos - lines[-1][-1].pos <= SNAP:
                lines[-1].append(rule)
            else:
                lines.append([rule])
        for line in lines:
            pos = sum(r.pos for r in line) / len(line)
            spans = sorted((r.start, r.end) for r in line)
            start, end = spans[0]
            for s, e in spans[1:]:
                if s <= end + SNAP:
                    end = max(end, e)
                else:
                    merged.append(Rule(horizontal, pos, start, end))
                    start, end = s, e
            merged.append(Rule(horizontal, pos, start, end))
    return merged


def _crosses(h: Rule, v: Rule) -> bool:
    return h.start - SNAP <= v.pos <= h.end + SNAP and v.start - SNAP <= h.pos <= v.end + SNAP


def find_grids(rules: Sequence[Rule]) -> list[Grid]:
    """The grids the rules draw: groups of crossing horizontal and vertical rules, cut into
    cells at every boundary, base cells merged where no rule separates them."""
    merged = merge_rules(rules)
    hs = [r for r in merged if r.horizontal]
    vs = [r for r in merged if not r.horizontal]
    parent = list(range(len(hs) + len(vs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    vs_by_x = sorted(range(len(vs)), key=lambda j: vs[j].pos)
    xs_sorted = [vs[j].pos for j in vs_by_x]

    for i, h in enumerate(hs):
        lo = bisect.bisect_left(xs_sorted, h.start - SNAP)
        hi = bisect.bisect_right(xs_sorted, h.end + SNAP)
        for j in vs_by_x[lo:hi]:
            if _crosses(h, vs[j]):
                parent[root(i)] = root(len(hs) + j)
    groups: dict[int, tuple[list[Rule], list[Rule]]] = {}
    for i, h in enumerate(hs):
        groups.setdefault(root(i), ([], []))[0].append(h)
    for j, v in enumerate(vs):
        groups.setdefault(root(len(hs) + j), ([], []))[1].append(v)
    grids = []
    for group_hs, group_vs in groups.values():
        if len(group_hs) >= 2 and len(group_vs) >= 2 and (grid := _grid(group_hs, group_vs)):
            grids.append(grid)
    return grids


def _boundaries(positions: Iterable[float]) -> list[float]:
    out: list[float] = []
    for pos in sorted(positions):
        if out and pos - out[-1] < MIN_BAND:
            continue
        out.append(pos)
    return out


def _covered(rules: Sequence[Rule], pos: float, lo: float, hi: float) -> bool:
    """Do rules at ``pos`` cover most of [lo, hi]?"""
    covered = 0.0
    for rule in rules:
        if abs(rule.pos - pos) < MIN_BAND:
            covered += max(0.0, min(rule.end, hi) - max(rule.start, lo))
    return covered >= EDGE_COVERED * (hi - lo)


def _grid(hs: list[Rule], vs: list[Rule]) -> Grid | None:
    xs = _boundaries(v.pos for v in vs)
    ys = _boundaries(h.pos for h in hs)
    # An open side (rules that run past the outermost crossing rule and stop, as in tables
    # without an outer frame) is a boundary too: the table ends where its rules do.
    virtual_x = {min(h.start for h in hs), max(h.end for h in hs)}
    virtual_y = {min(v.start for v in vs), max(v.end for v in vs)}
    xs = _boundaries([*xs, *(x for x in virtual_x if all(abs(x - b) > 2 * SNAP for b in xs))])
    ys = _boundaries([*ys, *(y for y in virtual_y if all(abs(y - b) > 2 * SNAP for b in ys))])
    ys.reverse()  # top to bottom
    rows, cols = len(ys) - 1, len(xs) - 1
    if rows < 2 or cols < 2:
        return None
    cell_of = list(range(rows * cols))

    def root(i: int) -> int:
        while cell_of[i] != i:
            cell_of[i] = cell_of[cell_of[i]]
            i = cell_of[i]
        return i

    for r in range(rows):
        for c in range(cols):
            # The edge right of (r, c) and the one below it: no rule there, one cell.
            if c + 1 < cols and not _covered(vs, xs[c + 1], ys[r + 1], ys[r]):
                cell_of[root(r * cols + c)] = root(r * cols + c + 1)
            if r + 1 < rows and not _covered(hs, ys[r + 1], xs[c], xs[c + 1]):
                cell_of[root(r * cols + c)] = root((r + 1) * cols + c)
    members: dict[int, list[tuple[int, int]]] = {}
    for r in range(rows):
        for c in range(cols):
            members.setdefault(root(r * cols + c), []).append((r, c))
    cells = []
    for group in members.values():
        r0, r1 = min(r for r, _ in group), max(r for r, _ in group)
        c0, c1 = min(c for _, c in group), max(c for _, c in group)
        if (r1 - r0 + 1) * (c1 - c0 + 1) != len(group):
            return None  # not a rectangle: not a table grid
        cells.append(GridCell(r0, c0, r1 - r0 + 1, c1 - c0 + 1))
    cells.sort(key=lambda cell: (cell.row, cell.col))
    grid = Grid(xs, ys, cells)
    # Merging may have left whole rows or columns without a cell of their own.
    if len({cell.row for cell in cells}) < 2 or len({cell.col for cell in cells}) < 2:
        return None
    return grid


# --------------------------------------------------------------------------- cells and checks


def _lines(words: Sequence[Word]) -> list[list[Word]]:
    """Words in reading order: lines top to bottom (a word joins a line it overlaps
    vertically by half its height), each left to right."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: -w.t):
        for line in lines:
            top, bottom = max(w.t for w in line), min(w.b for w in line)
            overlap = min(top, word.t) - max(bottom, word.b)
            if overlap >= 0.5 * min(word.t - word.b, top - bottom):
                line.append(word)
                break
        else:
            lines.append([word])
    return [sorted(line, key=lambda w: w.l) for line in lines]


def _cell_text(words: Sequence[Word]) -> str:
    return " ".join(" ".join(w.text for w in line) for line in _lines(words))


def _has_gap(words: Sequence[Word]) -> bool:
    """Does a line of these words have a gap wider than COLUMN_GAP times its height (columns
    the grid does not draw)?"""
    for line in _lines(words):
        height = max(w.t - w.b for w in line)
        if any(q.l - p.r > COLUMN_GAP * height for p, q in itertools.pairwise(line)):
            return True
    return False


def _inside(word: Word, box: tuple[float, float, float, float]) -> float:
    """The share of ``word``'s box inside ``box``."""
    l, b, r, t = box  # noqa: E741
    width = max(0.0, min(word.r, r) - max(word.l, l))
    height = max(0.0, min(word.t, t) - max(word.b, b))
    area = (word.r - word.l) * (word.t - word.b)
    return width * height / area if area > 0 else float(l <= word.cx <= r and b <= word.cy <= t)


def fill_grid(grid: Grid, words: Sequence[Word]) -> bool:
    """Put the words inside the grid into its cells. False when a rule cuts through a word
    or the grid does not look like a table: columns inside a cell, mostly empty, mostly
    merged, or one mark repeated."""
    l, b, r, t = grid.bbox  # noqa: E741
    inside = [w for w in words if l <= w.cx <= r and b <= w.cy <= t]
    for word in inside:
        cell = next((c for c in grid.cells if _contains(grid.cell_box(c), word.cx, word.cy)), None)
        if cell is None or _inside(word, grid.cell_box(cell)) < WORD_INSIDE:
            return False
        cell.words.append(word)
    if any(_has_gap(cell.words) for cell in grid.cells):
        return False
    texts = [text for cell in grid.cells if (text := cell.text.strip())]
    merged = sum(c.row_span * c.col_span for c in grid.cells if c.row_span * c.col_span > 1)
    return (
        len(texts) >= MIN_FILLED * len(grid.cells)
        # A few merged cells (a group header) make a table; mostly merged, a drawing
        # (a plot's axes, a layout's frames).
        and merged <= MAX_MERGED * grid.rows * grid.cols
        # The same mark in every cell is a drawing too.
        and len(set(texts)) > 1
    )


def _contains(box: tuple[float, float, float, float], x: float, y: float) -> bool:
    l, b, r, t = box  # noqa: E741
    return l <= x <= r and b <= y <= t


def _chars(text: str) -> Counter[str]:
    return Counter(re.sub(r"\s+", "", text))


def header_rows(grid: Grid) -> int:
    """How many rows the column header takes: the first row, with the rows its cells span,
    and the row under any header cell that spans columns (a group's sub-headers)."""
    rows = max(cell.row_span for cell in grid.cells if cell.row == 0)
    while rows < grid.rows - 1 and any(
        cell.col_span > 1 and cell.row + cell.row_span == rows
        for cell in grid.cells
        if cell.row < rows
    ):
        rows = max(cell.row + cell.row_span for cell in grid.cells if cell.row <= rows)
    return rows


def table_data(grid: Grid) -> TableData:
    """The grid as Docling's table, its header rows (``header_rows``) marked as such."""
    header = header_rows(grid)
    cells = []
    for cell in grid.cells:
        l, b, r, t = grid.cell_box(cell)  # noqa: E741
        cells.append(
            TableCell(
                bbox=BoundingBox(l=l, t=t, r=r, b=b, coord_origin=CoordOrigin.BOTTOMLEFT),
                row_span=cell.row_span,
                col_span=cell.col_span,
                start_row_offset_idx=cell.row,
                end_row_offset_idx=cell.row + cell.row_span,
                start_col_offset_idx=cell.col,
                end_col_offset_idx=cell.col + cell.col_span,
                text=cell.text,
                column_header=cell.row < header,
            )
        )
    return TableData(num_rows=grid.rows, num_cols=grid.cols, table_cells=cells)


# --------------------------------------------------------------------------- the document


def _box(item: TextItem) -> tuple[float, float, float, float] | None:
    if not item.prov:
        return None
    bbox = item.prov[0].bbox
    if bbox.coord_origin is not CoordOrigin.BOTTOMLEFT:
        return None
    return bbox.l, bbox.b, bbox.r, bbox.t


def place_table(
    document: DoclingDocument,
    page_no: int,
    grid: Grid,
    words: Sequence[Word],
    doomed: list[TextItem],
) -> bool:
    """Put ``grid`` (filled) into ``document`` in place of the text inside it, if that is
    the same text. A text line that crosses the table's border (the parser joins words
    across a narrow gap, such as the last column of one table and the first of the next)
    is cut at the border, when its words account for its text exactly. The items replaced
    are added to ``doomed``, for the caller to delete (at once: each deletion renumbers the
    whole document)."""
    l, b, r, t = grid.bbox  # noqa: E741
    table = (l, b, r, t)
    doomed_set = {item.self_ref for item in doomed}
    replaced: list[TextItem] = []
    trimmed: list[tuple[TextItem, list[Word]]] = []
    taken: list[Word] = []
    for child in document.body.children:
        item = child.resolve(document)
        if not isinstance(item, TextItem) or not item.prov or item.prov[0].page_no != page_no:
            continue
        if item.self_ref in doomed_set:
            continue
        if (box := _box(item)) is None or not _overlaps(box, table):
            continue
        if _share_inside(box, table) >= WORD_INSIDE:
            replaced.append(item)
            continue
        # Across the border: split it by its words, if they are its text.
        own = [w for w in words if _contains(box, w.cx, w.cy)]
        if _chars(" ".join(w.text for w in own)) != _chars(item.text):
            return False
        inner = [w for w in own if _contains(table, w.cx, w.cy)]
        if not inner:
            continue
        outer = [w for w in own if not _contains(table, w.cx, w.cy)]
        if outer:
            trimmed.append((item, outer))
        else:
            replaced.append(item)
        taken.extend(inner)
    if not replaced and not trimmed:
        return False
    cells_text = "".join(cell.text for cell in grid.cells)
    replaced_text = "".join(item.text for item in replaced) + "".join(w.text for w in taken)
    if _chars(cells_text) != _chars(replaced_text):
        return False
    anchor = replaced[0] if replaced else trimmed[0][0]
    document.insert_table(
        sibling=anchor,
        data=table_data(grid),
        prov=ProvenanceItem(
            page_no=page_no,
            bbox=BoundingBox(l=l, t=t, r=r, b=b, coord_origin=CoordOrigin.BOTTOMLEFT),
            charspan=(0, len(cells_text)),
        ),
        after=not replaced,
    )
    for item, outer in trimmed:
        text = _cell_text(outer)
        item.text = item.orig = text
        item.prov[0].bbox = BoundingBox(
            l=min(w.l for w in outer),
            t=max(w.t for w in outer),
            r=max(w.r for w in outer),
            b=min(w.b for w in outer),
            coord_origin=CoordOrigin.BOTTOMLEFT,
        )
        item.prov[0].charspan = (0, len(text))
    doomed.extend(replaced)
    return True


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _share_inside(
    box: tuple[float, float, float, float], outer: tuple[float, float, float, float]
) -> float:
    l, b, r, t = box  # noqa: E741
    return _inside(Word("", l, b, r, t), outer)


def page_grids(data: bytes, password: str | None, pages: Iterable[int]) -> dict[int, list[Grid]]:
    """The candidate grids of ``pages`` (1-based), by page, before any text check."""
    import pypdfium2
    from docling.utils.locks import pypdfium2_lock

    rules: dict[int, list[Rule] | None] = {}
    # pdfium is not thread-safe: Docling serializes its own calls with this lock, and
    # workers parse in threads.
    with pypdfium2_lock:
        pdf = pypdfium2.PdfDocument(data, password=password)
        try:
            for page_no in pages:
                page = pdf[page_no - 1]
                try:
                    rules[page_no] = page_rules(page)
                finally:
                    page.close()
        finally:
            pdf.close()
    found: dict[int, list[Grid]] = {}
    for page_no, drawn in rules.items():
        if drawn is None:
            log.info("page %d draws too much to look for ruled tables", page_no)
        elif grids := find_grids(drawn):
            found[page_no] = grids
    return found


def page_words(data: bytes, password: str | None, pages: Iterable[int]) -> dict[int, list[Word]]:
    """The words of ``pages`` as docling-parse reads them, in Docling's page frame."""
    from docling_parse.pdf_parser import ContentConfig, ContentLevel, DoclingPdfParser

    skip, words = ContentLevel.SKIP, ContentLevel.COMPUTE_AND_MATERIALIZE
    config = ContentConfig(
        char_cells_content_level=ContentLevel.COMPUTE,
        word_cells_content_level=words,
        line_cells_content_level=skip,
        shapes_content_level=skip,
        bitmaps_content_level=skip,
        include_bitmap_bytes=False,
    )
    parser = DoclingPdfParser(loglevel="fatal")
    pdf = parser.load(io.BytesIO(data), password=password, content_config=config)
    out: dict[int, list[Word]] = {}
    try:
        for page_no in pages:
            page = pdf.get_page(page_no, content_config=config)
            height = page.dimension.height
            out[page_no] = [
                Word(cell.text, box.l, box.b, box.r, box.t)
                for cell in page.word_cells
                if cell.text.strip()
                for box in [cell.rect.to_bounding_box().to_bottom_left_origin(height)]
            ]
    finally:
        pdf.unload()
    return out


def keep_ruled_tables(
    document: DoclingDocument,
    data: bytes,
    password: str | None,
    classes: Mapping[int, PageClass],
) -> int:
    """The ruled tables of a PDF parsed by the native pipeline, on its pages of text, each
    that passes the checks in place of its text. Returns the tables kept. A PDF whose
    drawing cannot be read keeps its text as it is."""
    pages = sorted(p for p, c in classes.items() if c is PageClass.TEXT)
    if not pages:
        return 0
    try:
        grids = page_grids(data, password, pages)
        grids = _with_text(document, grids)
        words = page_words(data, password, grids) if grids else {}
    except Exception:  # pdfium and docling-parse raise many kinds on odd files
        log.warning(
            "ruled tables not looked for: the PDF's drawing could not be read", exc_info=True
        )
        return 0
    kept = 0
    doomed: list[TextItem] = []
    for page_no, found in grids.items():
        for grid in found:
            page = words.get(page_no, [])
            if fill_grid(grid, page) and place_table(document, page_no, grid, page, doomed):
                kept += 1
    delete_items(document, doomed)
    return kept


def _with_text(document: DoclingDocument, grids: dict[int, list[Grid]]) -> dict[int, list[Grid]]:
    """The grids that hold some of the document's text (drawings are grids too): only their
    pages' words are read."""
    centres: dict[int, list[tuple[float, float]]] = {}
    for child in document.body.children:
        item = child.resolve(document)
        if isinstance(item, TextItem) and item.prov and item.prov[0].page_no in grids:
            if (box := _box(item)) is not None:
                centres.setdefault(item.prov[0].page_no, []).append(
                    ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
                )
    kept = {}
    for page_no, found in grids.items():
        points = centres.get(page_no, [])
        with_text = [g for g in found if sum(_contains(g.bbox, x, y) for x, y in points) >= 2]
        if with_text:
            kept[page_no] = with_text
    return kept


class _Refs(list):  # type: ignore[type-arg]
    """The refs to delete, with membership by cref in constant time: Docling tests every ref
    of the document against this list, with pydantic's ``==`` (seconds on a big PDF)."""

    def __init__(self, refs: Iterable[RefItem]) -> None:
        super().__init__(refs)
        self._crefs = {ref.cref for ref in self}

    def __contains__(self, ref: object) -> bool:
        return getattr(ref, "cref", None) in self._crefs


def delete_items(document: DoclingDocument, items: Sequence[NodeItem]) -> None:
    """``document.delete_items(node_items=items)``, in time linear in the document."""
    if not items:
        return
    if hasattr(document, "_delete_items"):
        document._delete_items(refs=_Refs(item.get_ref() for item in items))
    else:
        document.delete_items(node_items=list(items))
