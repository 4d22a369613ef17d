"""Parse quality of docindex's parser against the references in the shared corpus.

Five sections, each against a different kind of reference:

1. GeoTopo: word recall/precision of a 117-page German PDF against py-pdf's hand-corrected
   plain text (independent).
2. olmOCR-bench: allenai/olmocr's human-verified unit tests (present, absent, order, table,
   math, baseline), checked on our markdown with the semantics of ``olmocr/bench/tests.py``
   (independent). The math check is an approximation: olmOCR renders LaTeX with KaTeX.
3. Docling groundtruth: word F1 against markdown that Docling itself produced with its layout
   pipeline. Not independent: a regression baseline only.
4. OCR: pages with a known text layer rendered to image-only PDFs, OCRed through the
   product's path; word recall/precision and CER against the text layer.
5. Unreadable text layers: the pages of the corpus the detector flags, against the pages
   known (checked by eye) to be unreadable.

Scanned pages in sections 1-3 are OCRed as the product does (DOCINDEX_OCR=auto).

Usage: ``python -m bench.parse_quality [--corpus PATH] [--json OUT.json] [--failures]``

This is a report, not a test: it prints figures and asserts nothing about them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from docindex.pipeline.parsing import DocumentParser, ParsedDocument

GEOTOPO_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"
GEOTOPO_REFERENCE = "groundtruth/py-pdf_benchmarks/GeoTopo-book.txt"
OLMOCR_DIR = "olmocr_bench"
OLMOCR_TEST_FILES = ("dataset.jsonl", "blanks.jsonl")
DOCLING_GROUNDTRUTH_DIR = "groundtruth/docling"

MATH_NOTE = (
    "math tests are approximate: olmOCR compares KaTeX renderings; here LaTeX and our text "
    "are reduced to their symbols and checked for containment"
)
DOCLING_NOTE = (
    "the Docling groundtruth was produced by Docling itself with its layout (standard) "
    "pipeline: NOT an independent reference, a regression baseline only"
)
ERROR_NOTE = "A DocumentError from the parser counts as a failure of every check on that file"
NFKC_NOTICEABLE_PT = 0.5


# --------------------------------------------------------------------------- corpus


def default_corpus() -> Path:
    """The shared corpus beside the checkout; DOCINDEX_CORPUS where there is none."""
    beside = Path(__file__).resolve().parents[2] / "shared" / "corpus"
    if beside.is_dir():
        return beside
    return Path(os.environ.get("DOCINDEX_CORPUS", str(beside)))


class MissingInput(Exception):
    """A section's inputs are not in this corpus; the section is skipped, not failed."""


def require(corpus: Path, relative: str) -> Path:
    path = corpus / relative
    if not path.exists():
        raise MissingInput(f"{relative} not found in the corpus")
    return path


# --------------------------------------------------------------------------- word scores

# Letters and digits only: ``\w`` also matches "_", and Docling's markdown escapes it ("\_"),
# which would make "_foo" a word distinct from "foo".
_WORD = re.compile(r"[^\W_]+")


def word_counts(text: str, *, nfkc: bool = False) -> Counter[str]:
    """Lower-cased words as a multiset; NFKC first folds ligatures ("ﬁ") and superscripts."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    return Counter(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class WordScore:
    recall: float
    precision: float
    f1: float
    reference_words: int
    output_words: int
    matched_words: int


def word_score(output: str, reference: str, *, nfkc: bool = False) -> WordScore:
    """Multiset word overlap of ``output`` with ``reference``.

    Two empty texts agree perfectly; an empty text against a non-empty one scores zero.
    """
    out, ref = word_counts(output, nfkc=nfkc), word_counts(reference, nfkc=nfkc)
    matched = sum((out & ref).values())
    n_out, n_ref = sum(out.values()), sum(ref.values())
    recall = matched / n_ref if n_ref else float(n_out == 0)
    precision = matched / n_out if n_out else float(n_ref == 0)
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return WordScore(recall, precision, f1, n_ref, n_out, matched)


# --------------------------------------------------------------------------- fuzzy matching
# Pure-Python equivalents of the rapidfuzz and fuzzysearch calls olmOCR makes, so the bench
# needs nothing the project does not already install.


def _char_masks(text: str) -> dict[str, int]:
    masks: dict[str, int] = {}
    for i, char in enumerate(text):
        masks[char] = masks.get(char, 0) | (1 << i)
    return masks


def _lcs_with_masks(masks: Mapping[str, int], length: int, other: str) -> int:
    # Bit-parallel LCS (Hyyrö): one big-int step per character of ``other``.
    full = (1 << length) - 1
    v = full
    for char in other:
        u = v & masks.get(char, 0)
        v = ((v + u) | (v - u)) & full
    return length - v.bit_count()


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``."""
    return _lcs_with_masks(_char_masks(a), len(a), b) if a else 0


def ratio(a: str, b: str) -> float:
    """rapidfuzz ``fuzz.ratio`` / 100: normalised Indel similarity, 2·LCS / (|a| + |b|)."""
    total = len(a) + len(b)
    return 2 * lcs_length(a, b) / total if total else 1.0


def partial_ratio(a: str, b: str) -> float:
    """rapidfuzz ``fuzz.partial_ratio`` / 100: the best ``ratio`` of the shorter string against
    a window of the longer one of the same length (windows cut short by either end count)."""
    needle, haystack = (a, b) if len(a) <= len(b) else (b, a)
    if not needle:
        return float(not haystack)
    if needle in haystack:
        return 1.0
    m, n = len(needle), len(haystack)
    masks = _char_masks(needle)
    windows = chain(
        (haystack[:end] for end in range(1, m)),
        (haystack[i : i + m] for i in range(n - m + 1)),
        (haystack[i:] for i in range(n - m + 1, n)),
    )
    return max(2 * _lcs_with_masks(masks, m, w) / (m + len(w)) for w in windows)


def _distance_from_each_start(pattern: str, text: str) -> list[int]:
    """For each offset i of ``text``: the least Levenshtein distance between ``pattern`` and a
    substring of ``text`` starting at i. Semi-global DP run over the reversed strings, so that
    the free end of the alignment is its start."""
    rev_pattern = pattern[::-1]
    column = list(range(len(pattern) + 1))
    best_ending: list[int] = []
    for char in reversed(text):
        current = [0]
        for i, p_char in enumerate(rev_pattern, start=1):
            current.append(min(column[i - 1] + (p_char != char), column[i] + 1, current[i - 1] + 1))
        best_ending.append(current[-1])
        column = current
    return best_ending[::-1]


def near_match_starts(pattern: str, text: str, max_dist: int) -> list[int]:
    """Starts of the matches ``fuzzysearch.find_near_matches(pattern, text, max_l_dist)``
    reports: within each run of adjacent candidate starts, the closest one (first on ties),
    as fuzzysearch keeps one match per group of overlapping candidates."""
    if not pattern:
        return []
    if max_dist == 0:
        return [m.start() for m in re.finditer(f"(?={re.escape(pattern)})", text)]
    distances = _distance_from_each_start(pattern, text)
    starts: list[int] = []
    run: list[int] = []
    for i, distance in enumerate([*distances, max_dist + 1]):  # sentinel closes the last run
        if distance <= max_dist:
            run.append(i)
        elif run:
            starts.append(min(run, key=distances.__getitem__))
            run = []
    return starts


# --------------------------------------------------------------------------- olmOCR checks

_FANCY_CHARS = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\uff3f": "_",
        "\u2013": "-",
        "\u2014": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2212": "-",
        "\u00b5": "\u03bc",
    }
)


def normalize_text(text: str) -> str:
    """olmOCR's ``normalize_text``: drop bold/italic markup, collapse whitespace, NFC, and
    fold typographic quotes and dashes to ASCII."""
    text = re.sub(r"<br/?>", " ", text)
    text = re.sub(r"\*\*(.*?)\*\*", r"\1", text)
    text = re.sub(r"__(.*?)__", r"\1", text)
    text = re.sub(r"</?[bi]>", "", text)
    text = re.sub(r"(\*\*|__)(.*?)\1", r"\2", text)
    text = re.sub(r"(\*|_)(.*?)\1", r"\2", text)
    text = re.sub(r"\s+", " ", text)
    return unicodedata.normalize("NFC", text).translate(_FANCY_CHARS)


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    reason: str = ""


Spec = Mapping[str, Any]
"""One olmOCR test as read from its JSONL line."""

# olmOCR compares floats derived from integer counts; this absorbs rounding at the boundary.
_EPSILON = 1e-9


def _threshold(max_diffs: int, text: str) -> float:
    return 1.0 - max_diffs / (len(text) or 1)


def check_presence(spec: Spec, markdown: str) -> CheckResult:
    """``present``/``absent``: fuzzy containment of ``text``, tolerating ``max_diffs`` edits."""
    query, content = normalize_text(spec["text"]), normalize_text(markdown)
    if not spec.get("case_sensitive", True):
        query, content = query.lower(), content.lower()
    first_n, last_n = spec.get("first_n"), spec.get("last_n")
    if first_n and last_n:
        content = content[:first_n] + content[-last_n:]
    elif first_n:
        content = content[:first_n]
    elif last_n:
        content = content[-last_n:]
    max_diffs = int(spec.get("max_diffs", 0))
    want_present = spec["type"] == "present"
    # olmOCR's guard: partial_ratio is symmetric, so a very short output would "contain" a query.
    if len(content) < len(query) - max_diffs:
        return CheckResult(not want_present, "output too short to contain the text")
    best = partial_ratio(query, content)
    found = best >= _threshold(max_diffs, query) - _EPSILON
    if found == want_present:
        return CheckResult(True)
    what = "not found" if want_present else "found but should be absent"
    return CheckResult(False, f"{what} (best match {best:.3f}): {query[:60]!r}")


def check_order(spec: Spec, markdown: str) -> CheckResult:
    """``order``: some near match of ``before`` starts before some near match of ``after``."""
    content = normalize_text(markdown)
    max_diffs = int(spec.get("max_diffs", 0))
    before, after = normalize_text(spec["before"]), normalize_text(spec["after"])
    before_starts = near_match_starts(before, content, max_diffs)
    after_starts = near_match_starts(after, content, max_diffs)
    if not before_starts:
        return CheckResult(False, f"'before' not found: {before[:60]!r}")
    if not after_starts:
        return CheckResult(False, f"'after' not found: {after[:60]!r}")
    if min(before_starts) < max(after_starts):
        return CheckResult(True)
    return CheckResult(False, "both found, in the wrong order")


@dataclass(frozen=True)
class MarkdownTable:
    """A pipe table; as in olmOCR, its first row and first column are the heading cells."""

    rows: tuple[tuple[str, ...], ...]

    def cells(self) -> Iterable[tuple[int, int, str]]:
        for r, row in enumerate(self.rows):
            for c, text in enumerate(row):
                yield r, c, text

    def _has(self, row: int, col: int) -> bool:
        return col < len(self.rows[row])

    def related(self, row: int, col: int, relation: str) -> list[str]:
        """Texts of the cells in ``relation`` to (row, col): the adjacent cell up, down, left
        or right, or every heading cell above (``top_heading``) or to the left
        (``left_heading``). Short rows leave holes, which up/down step over."""
        above, below = range(row - 1, -1, -1), range(row + 1, len(self.rows))
        if relation == "left":
            return [self.rows[row][col - 1]] if col > 0 else []
        if relation == "right":
            return [self.rows[row][col + 1]] if self._has(row, col + 1) else []
        if relation in ("up", "down"):
            scan = above if relation == "up" else below
            return next(([self.rows[r][col]] for r in scan if self._has(r, col)), [])
        if relation == "top_heading":
            return [self.rows[r][col] for r in above if self._has(r, col) and (r == 0 or col == 0)]
        if relation == "left_heading":
            return [self.rows[row][c] for c in range(col - 1, -1, -1) if c == 0 or row == 0]
        raise ValueError(f"unknown table relation {relation!r}")


_SEPARATOR_CHARS = set("- :")


def _table_rows(lines: Sequence[str]) -> list[tuple[str, ...]]:
    # Port of olmOCR's _process_table_lines: skip the |---| separator and all-rule lines, split
    # on pipes, and drop the empty cell a leading or trailing pipe leaves.
    rows: list[tuple[str, ...]] = []
    separator_seen = False
    for line in lines:
        bare = line.replace("|", "").strip()
        if bare and set(bare) <= _SEPARATOR_CHARS and not separator_seen:
            separator_seen = True
            continue
        if line.strip() and set(line) <= _SEPARATOR_CHARS | {"|"}:
            continue
        cells = [cell.strip() for cell in line.split("|")]
        if cells and cells[0] == "":
            cells = cells[1:]
        if cells and cells[-1] == "":
            cells = cells[:-1]
        if cells:
            rows.append(tuple(cells))
    return rows


def parse_markdown_tables(markdown: str) -> list[MarkdownTable]:
    """Every run of two or more consecutive lines containing a pipe, read as a table."""
    tables: list[MarkdownTable] = []
    block: list[str] = []
    for line in [*markdown.strip().split("\n"), ""]:  # the sentinel ends the last block
        if "|" in line:
            block.append(line)
            continue
        if len(block) >= 2 and (rows := _table_rows(block)):
            tables.append(MarkdownTable(tuple(rows)))
        block = []
    return tables


_TABLE_RELATIONS = ("up", "down", "left", "right", "top_heading", "left_heading")


def _similar(expected: str, actual: str, max_diffs: int) -> bool:
    threshold = max(0.5, _threshold(max_diffs, expected))
    return ratio(expected, normalize_text(actual)) >= threshold - _EPSILON


def check_table(spec: Spec, markdown: str) -> CheckResult:
    """``table``: a cell matching ``cell`` whose neighbours match every relation given."""
    max_diffs = int(spec.get("max_diffs", 0))
    target = normalize_text(spec["cell"])
    expected = {rel: normalize_text(spec[rel]) for rel in _TABLE_RELATIONS if spec.get(rel)}
    tables = parse_markdown_tables(markdown)
    if not tables:
        return CheckResult(False, "no tables in the output")
    cell_found = False
    for table in tables:
        for row, col, text in table.cells():
            if not _similar(target, text, max_diffs):
                continue
            cell_found = True
            if all(
                any(_similar(want, got, max_diffs) for got in table.related(row, col, rel))
                for rel, want in expected.items()
            ):
                return CheckResult(True)
    if cell_found:
        return CheckResult(False, f"cell {target!r} found, neighbours differ: {expected}")
    return CheckResult(False, f"no table cell matches {target!r}")


_DELIMITED_MATH = (r"\\\((.+?)\\\)", r"\\\[(.+?)\\\]", r"\$\$(.+?)\$\$", r"\$(.+?)\$")

_LATEX_SYMBOLS = {
    "alpha": "\N{GREEK SMALL LETTER ALPHA}",
    "beta": "\N{GREEK SMALL LETTER BETA}",
    "gamma": "\N{GREEK SMALL LETTER GAMMA}",
    "delta": "\N{GREEK SMALL LETTER DELTA}",
    "epsilon": "\N{GREEK SMALL LETTER EPSILON}",
    "zeta": "\N{GREEK SMALL LETTER ZETA}",
    "theta": "\N{GREEK SMALL LETTER THETA}",
    "lambda": "\N{GREEK SMALL LETTER LAMDA}",
    "mu": "\N{GREEK SMALL LETTER MU}",
    "pi": "\N{GREEK SMALL LETTER PI}",
    "sigma": "\N{GREEK SMALL LETTER SIGMA}",
    "phi": "\N{GREEK SMALL LETTER PHI}",
    "psi": "\N{GREEK SMALL LETTER PSI}",
    "omega": "\N{GREEK SMALL LETTER OMEGA}",
    "nabla": "\N{NABLA}",
    "partial": "\N{PARTIAL DIFFERENTIAL}",
    "times": "\N{MULTIPLICATION SIGN}",
    "cdot": "\N{DOT OPERATOR}",
    "int": "\N{INTEGRAL}",
    "sum": "\N{N-ARY SUMMATION}",
    "prod": "\N{N-ARY PRODUCT}",
    "in": "\N{ELEMENT OF}",
    "infty": "\N{INFINITY}",
    "leq": "\N{LESS-THAN OR EQUAL TO}",
    "geq": "\N{GREATER-THAN OR EQUAL TO}",
    "neq": "\N{NOT EQUAL TO}",
    "prime": "'",
}


def delimited_equations(markdown: str) -> list[str]:
    """Equations in \\(..\\), \\[..\\], $$..$$ or $..$, found in that order as olmOCR does."""
    equations: list[str] = []
    for pattern in _DELIMITED_MATH:
        equations += [eq.strip() for eq in re.findall(pattern, markdown, re.DOTALL)]
        markdown = re.sub(pattern, "", markdown, flags=re.DOTALL)
    return equations


def math_symbols(text: str) -> str:
    """Reduce LaTeX, or text extracted from a typeset formula, to its sequence of symbols:
    commands become Unicode (unknown ones, like \\mathbf or \\left, vanish), and spacing,
    grouping and sub/superscript markers are dropped, so "a^{2}" and "a²" both give "a2"."""
    text = re.sub(r"\\([A-Za-z]+)", lambda m: _LATEX_SYMBOLS.get(m.group(1), ""), text)
    text = unicodedata.normalize("NFKC", text).replace("\N{PRIME}", "'")
    text = text.translate(_FANCY_CHARS)
    # Spacing commands ("\\,") first: the character class would take their backslash alone.
    return re.sub(r"\\[,;:! ]|[\s{}^_$\\]", "", text)


def check_math(spec: Spec, markdown: str) -> CheckResult:
    """``math``: olmOCR's exact-equation shortcut, then (approximate) symbol containment."""
    latex = spec["math"]
    if latex in delimited_equations(markdown):
        return CheckResult(True)
    if math_symbols(latex) in math_symbols(markdown):
        return CheckResult(True, "approximate: symbols found in order")
    return CheckResult(False, f"formula not found (approximate check): {latex[:60]!r}")


_DISALLOWED_CHARS = re.compile(
    "[\u4e00-\u9fff\u3040-\u309f\u30a0-\u30ff"
    "\U0001f600-\U0001f64f\U0001f300-\U0001f5ff\U0001f680-\U0001f6ff\U0001f1e0-\U0001f1ff]"
)
_MAX_REPEATS = 30


def trailing_repeats(text: str, max_ngram: int = 5) -> list[int]:
    """olmOCR's RepeatDetector: for n = 1..max_ngram, how many times the final n characters
    repeat back to back at the end (a sign of a degenerate, looping output)."""
    text = re.sub(r"\s+", " ", text)
    counts = [0] * max_ngram
    for size in range(1, min(max_ngram, len(text)) + 1):
        target, pos = text[-size:], len(text) - size
        while pos >= 0 and text[pos : pos + size] == target:
            counts[size - 1] += 1
            pos -= size
    return counts


def check_baseline(spec: Spec, markdown: str) -> CheckResult:
    """``baseline``: a blank page stays (nearly) blank; any other page has text that neither
    loops at its end nor holds CJK or emoji characters."""
    alnum = sum(char.isalnum() for char in markdown)
    max_length = spec.get("max_length")
    if max_length is not None:
        ok = alnum <= max_length
        return CheckResult(ok, "" if ok else f"{alnum} characters on a page expected blank")
    if alnum == 0:
        return CheckResult(False, "no alphanumeric characters")
    if max(trailing_repeats(markdown)) > _MAX_REPEATS:
        return CheckResult(False, "output ends in a repeating n-gram")
    if found := _DISALLOWED_CHARS.findall(markdown):
        return CheckResult(False, f"disallowed characters: {''.join(found[:10])}")
    return CheckResult(True)


CHECKS: dict[str, Callable[[Spec, str], CheckResult]] = {
    "present": check_presence,
    "absent": check_presence,
    "order": check_order,
    "table": check_table,
    "math": check_math,
    "baseline": check_baseline,
}


def run_check(spec: Spec, markdown: str) -> CheckResult:
    check = CHECKS.get(spec["type"])
    if check is None:
        return CheckResult(False, f"unsupported test type {spec['type']!r}")
    return check(spec, markdown)


# --------------------------------------------------------------------------- parsing


@dataclass
class ParseOutcome:
    source: str
    seconds: float
    parsed: ParsedDocument | None = None
    error: str | None = None  # "ErrorType: message" when the parser rejected the file


class ParseCache:
    """Parses each corpus file at most once and keeps the outcome, errors included."""

    def __init__(self, parser: DocumentParser, corpus: Path) -> None:
        self.parser = parser
        self.corpus = corpus
        self._outcomes: dict[str, ParseOutcome] = {}

    def get(self, relative: str) -> ParseOutcome:
        if relative not in self._outcomes:
            self._outcomes[relative] = self._parse(relative)
        return self._outcomes[relative]

    def _parse(self, relative: str) -> ParseOutcome:
        from docindex.errors import DocumentError
        from docindex.pipeline.ocr import ocr_pages
        from docindex.pipeline.parsing import apply_ocr, ensure_has_text, settle_pages

        path = self.corpus / relative
        start = time.perf_counter()
        try:
            data = path.read_bytes()
            parsed = self.parser.parse(data, path.name)
            # As the product does: the pages with no readable text are OCRed (their own
            # step there), then a document with no text at all is rejected.
            if pending := self.parser.pages_to_ocr(parsed.document):
                apply_ocr(parsed.document, ocr_pages(data, pending))
            settle_pages(parsed.document)
            ensure_has_text(parsed.document, parsed.kind, self.parser.ocr)
        except DocumentError as exc:
            seconds = time.perf_counter() - start
            return ParseOutcome(relative, seconds, error=f"{exc.error_type}: {exc}")
        return ParseOutcome(relative, time.perf_counter() - start, parsed=parsed)


# --------------------------------------------------------------------------- section 4: OCR
# Pages whose text layer is known are rendered to images and OCRed through the product's
# path (parse, page classes, OCR, lines into the document); the OCR text is compared with
# the text layer. The same pages' text layers are the detector's readable examples.

OCR_PAGES = (
    ("pdf/docling/multi_page.pdf", 1),
    ("pdf/docling/redp5110_sampled.pdf", 2),
    ("pdf/docling/2305.03393v1-pg9.pdf", 1),
    ("pdf/docling/amt_handbook_sample.pdf", 1),
    ("pdf/docling/code_and_formula.pdf", 1),
    ("pdf/icdar2013/eu-001.pdf", 1),
    ("pdf/icdar2013/us-002.pdf", 1),
    ("pdf/pdfplumber/scotus-transcript-p1.pdf", 1),
    ("pdf/pypdf_samples/GeoTopo-komprimiert.pdf", 4),
    ("pdf/unstructured/multi-column-2p.pdf", 1),
    ("olmocr_bench/pdfs/earnings.pdf", 1),
    ("olmocr_bench/pdfs/olmo2-pg4.pdf", 1),
    ("olmocr_bench/pdfs/openstax_caculus_pg_273.pdf", 1),
    ("olmocr_bench/pdfs/small_page_size.pdf", 1),
)
OCR_DPI_SCAN = 150  # the "scan": what a 150 dpi scanner gives


@dataclass
class OcrRow:
    page: str
    word_recall: float
    word_precision: float
    cer: float
    seconds: float


@dataclass
class OcrResult:
    rows: list[OcrRow]
    mean_recall: float
    mean_precision: float
    median_cer: float
    seconds_per_page: float


def char_error_rate(output: str, reference: str) -> float:
    """Levenshtein distance over the reference's length, whitespace collapsed."""
    out, ref = " ".join(output.split()), " ".join(reference.split())
    if not ref:
        return float(bool(out))
    import numpy as np

    # One row of the edit-distance table per reference character, vectorised over the
    # output: substitutions and deletions first, then insertions as a running minimum.
    codes = np.array([ord(c) for c in out], dtype=np.int64)
    columns = np.arange(len(out) + 1)
    previous = columns.copy()
    for i, char in enumerate(ref, 1):
        row = np.empty_like(previous)
        row[0] = i
        row[1:] = np.minimum(previous[1:] + 1, previous[:-1] + (codes != ord(char)))
        previous = np.minimum.accumulate(row - columns) + columns
    return int(previous[-1]) / len(ref)


def _text_layer_in_reading_order(page: Any) -> str:
    """A page's text layer as pdfium's text boxes, top to bottom then left to right: the
    order the OCR lines of one column come in, so CER measures reading, not layout."""
    from docindex.pipeline.ocr import OcrLine, reading_order

    textpage = page.get_textpage()
    lines = []
    for k in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(k)
        text = textpage.get_text_bounded(left, bottom, right, top).strip()
        if text:
            lines.append(OcrLine(text=text, l=left, r=right, t=top, b=bottom, score=1.0))
    return "\n".join(line.text for line in reading_order(lines))


def run_ocr(corpus: Path, cache: ParseCache) -> OcrResult:
    import io

    import pypdfium2

    from docindex.pipeline.ocr import ocr_pages
    from docindex.pipeline.parsing import DocumentParser, apply_ocr, page_text

    parser = DocumentParser("native", ocr="auto")
    rows = []
    for relative, page_no in OCR_PAGES:
        path = require(corpus, relative)
        page = pypdfium2.PdfDocument(path)[page_no - 1]
        reference = _text_layer_in_reading_order(page)
        image = page.render(scale=OCR_DPI_SCAN / 72).to_pil().convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PDF", resolution=OCR_DPI_SCAN)
        scan = buffer.getvalue()
        start = time.perf_counter()
        parsed = parser.parse(scan, "scan.pdf")
        apply_ocr(parsed.document, ocr_pages(scan, parser.pages_to_ocr(parsed.document)))
        seconds = time.perf_counter() - start
        output = page_text(parsed.document).get(1, "")
        score = word_score(output, reference, nfkc=True)
        rows.append(
            OcrRow(
                page=f"{relative}#{page_no}",
                word_recall=score.recall,
                word_precision=score.precision,
                cer=char_error_rate(output, reference),
                seconds=seconds,
            )
        )
    cers = sorted(r.cer for r in rows)
    return OcrResult(
        rows=rows,
        mean_recall=_mean([r.word_recall for r in rows]),
        mean_precision=_mean([r.word_precision for r in rows]),
        median_cer=cers[len(cers) // 2],
        seconds_per_page=_mean([r.seconds for r in rows]),
    )


# Pages of the corpus whose text layer is known to be unreadable: crazyones.pdf (Docling's
# parser reads its fonts as U+FFFD only) and the sidebar of redp5110_sampled.pdf's page 3.
KNOWN_UNREADABLE = {("pdf/pypdf/crazyones.pdf", 1), ("pdf/docling/redp5110_sampled.pdf", 3)}


@dataclass
class DetectorResult:
    pages: int
    flagged: list[str]
    known_unreadable: list[str]
    missed: list[str]
    false_positives: list[str]


def run_detector(corpus: Path, cache: ParseCache) -> DetectorResult:
    """Every text page of the corpus's PDFs through the unreadable-text-layer detector: the
    pages it flags against those known to be unreadable."""
    from docindex.pipeline.pages import PageClass
    from docindex.pipeline.parsing import DocumentParser, page_classes

    # OCR on: its parse classifies pages and leaves them to OCR (nothing is OCRed here);
    # off, a PDF with no readable text at all would be rejected before it is counted.
    parser = DocumentParser("native", ocr="auto")
    pdfs = sorted(str(p.relative_to(corpus)) for p in (corpus / "pdf").rglob("*.pdf"))
    pdfs += sorted(str(p.relative_to(corpus)) for p in (corpus / OLMOCR_DIR).rglob("*.pdf"))
    if not pdfs:
        raise MissingInput("no PDFs in the corpus")
    flagged: list[tuple[str, int]] = []
    pages = 0
    from docindex.errors import DocumentError

    for relative in pdfs:
        try:
            parsed = parser.parse((corpus / relative).read_bytes(), Path(relative).name)
        except DocumentError:
            continue
        classes = page_classes(parsed.document)
        pages += sum(c in (PageClass.TEXT, PageClass.UNREADABLE) for c in classes.values())
        flagged += [(relative, p) for p, c in classes.items() if c is PageClass.UNREADABLE]
    known = sorted(k for k in KNOWN_UNREADABLE if k[0] in pdfs)

    def names(items: Iterable[tuple[str, int]]) -> list[str]:
        return [f"{r}#{p}" for r, p in sorted(items)]

    return DetectorResult(
        pages=pages,
        flagged=names(flagged),
        known_unreadable=names(known),
        missed=names(set(known) - set(flagged)),
        false_positives=names(set(flagged) - set(known)),
    )


# --------------------------------------------------------------------------- section 1: GeoTopo


@dataclass
class GeoTopoResult:
    pdf: str
    reference: str
    pages: int | None
    parse_seconds: float
    error: str | None
    raw: WordScore | None
    nfkc: WordScore | None


def run_geotopo(corpus: Path, cache: ParseCache) -> GeoTopoResult:
    reference = require(corpus, GEOTOPO_REFERENCE).read_text(encoding="utf-8")
    require(corpus, GEOTOPO_PDF)
    outcome = cache.get(GEOTOPO_PDF)
    result = GeoTopoResult(GEOTOPO_PDF, GEOTOPO_REFERENCE, None, outcome.seconds, None, None, None)
    if outcome.parsed is None:
        result.error = outcome.error
        return result
    # Plain text, not markdown: the reference is plain text too.
    text = outcome.parsed.document.export_to_text()
    result.pages = outcome.parsed.pages
    result.raw = word_score(text, reference)
    result.nfkc = word_score(text, reference, nfkc=True)
    return result


# --------------------------------------------------------------------------- section 2: olmOCR


@dataclass(frozen=True)
class BenchTest:
    id: str
    pdf: str
    page: int
    type: str
    source: str  # the JSONL file it came from, or "auto" for olmOCR's implicit baselines
    spec: Spec


def load_tests(path: Path) -> list[BenchTest]:
    tests = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            spec = json.loads(line)
            tests.append(
                BenchTest(spec["id"], spec["pdf"], int(spec["page"]), spec["type"], path.name, spec)
            )
    return tests


def with_default_baselines(tests: Sequence[BenchTest], pdfs: Iterable[str]) -> list[BenchTest]:
    """olmOCR's benchmark.py adds a plain baseline test (page 1) for every PDF without one."""
    covered = {t.pdf for t in tests if t.type == "baseline"}
    extra = [
        BenchTest(f"{pdf}_baseline", pdf, 1, "baseline", "auto", {"type": "baseline"})
        for pdf in pdfs
        if pdf not in covered
    ]
    return [*tests, *extra]


@dataclass(frozen=True)
class Verdict:
    id: str
    pdf: str
    page: int
    type: str
    source: str
    passed: bool
    reason: str


@dataclass(frozen=True)
class Tally:
    passed: int
    total: int
    rate: float


def tally(outcomes: Iterable[Verdict]) -> Tally:
    results = [o.passed for o in outcomes]
    return Tally(sum(results), len(results), sum(results) / len(results) if results else 0.0)


def group_tallies(outcomes: Sequence[Verdict], key: Callable[[Verdict], str]) -> dict[str, Tally]:
    groups: dict[str, list[Verdict]] = {}
    for outcome in outcomes:
        groups.setdefault(key(outcome), []).append(outcome)
    return {name: tally(group) for name, group in sorted(groups.items())}


@dataclass
class OlmocrResult:
    overall: Tally
    human_verified: Tally  # dataset.jsonl only: no blank-page or implicit baseline tests
    by_type: dict[str, Tally]
    by_source: dict[str, Tally]
    by_pdf: dict[str, Tally]
    parse_errors: dict[str, str]
    parse_seconds: float
    tests: list[Verdict]


def page_markdown(parsed: ParsedDocument, page: int) -> str:
    # Unescaped: olmOCR matches the text a reader sees, and other tools emit "&" and "_" as is.
    return parsed.document.export_to_markdown(
        page_no=page, escape_html=False, escape_underscores=False
    )


def evaluate(test: BenchTest, outcome: ParseOutcome) -> Verdict:
    if outcome.parsed is None:
        result = CheckResult(False, outcome.error or "not parsed")
    elif test.page > (outcome.parsed.pages or 0):
        result = CheckResult(False, f"page {test.page} missing from the output")
    else:
        result = run_check(test.spec, page_markdown(outcome.parsed, test.page))
    return Verdict(
        test.id, test.pdf, test.page, test.type, test.source, result.passed, result.reason
    )


def run_olmocr(corpus: Path, cache: ParseCache) -> OlmocrResult:
    base = require(corpus, OLMOCR_DIR)
    pdf_dir = require(corpus, f"{OLMOCR_DIR}/pdfs")
    pdfs = sorted(p.relative_to(pdf_dir).as_posix() for p in pdf_dir.rglob("*.pdf"))
    tests = [
        t for name in OLMOCR_TEST_FILES if (base / name).is_file() for t in load_tests(base / name)
    ]
    if not tests:
        raise MissingInput(f"no test files ({', '.join(OLMOCR_TEST_FILES)}) in {OLMOCR_DIR}")
    tests = with_default_baselines(tests, pdfs)
    outcomes = {
        pdf: cache.get(f"{OLMOCR_DIR}/pdfs/{pdf}") for pdf in sorted({t.pdf for t in tests})
    }
    results = [evaluate(test, outcomes[test.pdf]) for test in tests]
    return OlmocrResult(
        overall=tally(results),
        human_verified=tally(r for r in results if r.source == "dataset.jsonl"),
        by_type=group_tallies(results, lambda r: r.type),
        by_source=group_tallies(results, lambda r: r.source),
        by_pdf=group_tallies(results, lambda r: r.pdf),
        parse_errors={pdf: o.error for pdf, o in outcomes.items() if o.error},
        parse_seconds=sum(o.seconds for o in outcomes.values()),
        tests=results,
    )


# --------------------------------------------------------------------------- section 3: Docling


def _guess_source(corpus: Path, groundtruth_name: str) -> str | None:
    # Docling names office ground truth "<file>.md" and OCR ground truth "<stem>.<engine>...md".
    name = groundtruth_name.removesuffix(".md")
    for candidate in (
        f"office/docling/{name}",
        f"pdf/docling/{name}.pdf",
        f"pdf/docling/{name.split('.')[0]}.pdf",
    ):
        if (corpus / candidate).is_file():
            return candidate
    return None


def docling_pairs(corpus: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(groundtruth, source) pairs and the ground truths without a source in the corpus.

    MANIFEST.tsv's notes say "GT: groundtruth/docling/<name>.md" for each source; names decide
    for any ground truth it does not list.
    """
    mapped: dict[str, str] = {}
    manifest = corpus / "MANIFEST.tsv"
    if manifest.is_file():
        with manifest.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                note = re.match(rf"GT: ({DOCLING_GROUNDTRUTH_DIR}/\S+\.md)", row.get("notes") or "")
                if note and row["file"].startswith(("pdf/docling/", "office/docling/")):
                    mapped[note.group(1)] = row["file"]
    pairs, missing = [], []
    for path in sorted(require(corpus, DOCLING_GROUNDTRUTH_DIR).glob("*.md")):
        groundtruth = path.relative_to(corpus).as_posix()
        source = mapped.get(groundtruth) or _guess_source(corpus, path.name)
        if source and (corpus / source).is_file():
            pairs.append((groundtruth, source))
        else:
            missing.append(groundtruth)
    return pairs, missing


@dataclass(frozen=True)
class RegressionRow:
    groundtruth: str
    source: str
    kind: str | None
    parse_seconds: float
    error: str | None
    score: WordScore | None


@dataclass
class RegressionResult:
    rows: list[RegressionRow]
    missing_sources: list[str]
    mean_f1_all: float  # a parse failure counts as F1 0
    mean_f1_parsed: float
    failures: int


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_regression(corpus: Path, cache: ParseCache) -> RegressionResult:
    pairs, missing = docling_pairs(corpus)
    rows = []
    for groundtruth, source in pairs:
        outcome = cache.get(source)
        score, kind = None, None
        if outcome.parsed is not None:
            # Default export options: the ground truth was written with them.
            markdown = outcome.parsed.document.export_to_markdown()
            score = word_score(markdown, (corpus / groundtruth).read_text(encoding="utf-8"))
            kind = outcome.parsed.kind.value
        rows.append(RegressionRow(groundtruth, source, kind, outcome.seconds, outcome.error, score))
    parsed = [row.score.f1 for row in rows if row.score]
    return RegressionResult(
        rows=rows,
        missing_sources=missing,
        mean_f1_all=_mean([row.score.f1 if row.score else 0.0 for row in rows]),
        mean_f1_parsed=_mean(parsed),
        failures=len(rows) - len(parsed),
    )


# --------------------------------------------------------------------------- rendering


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _tally_text(t: Tally) -> str:
    return f"{t.passed}/{t.total} ({_pct(t.rate)})"


def render_geotopo(console: Console, result: GeoTopoResult, pipeline: str) -> None:
    table = Table(title=f"GeoTopo word overlap vs hand-corrected text (pdf pipeline: {pipeline})")
    for column in ("variant", "recall", "precision", "F1", "ref words", "our words", "matched"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    if result.error:
        table.add_row("parse failed", result.error, "", "", "", "", "")
    for label, score in (("raw", result.raw), ("NFKC", result.nfkc)):
        if score:
            table.add_row(
                label,
                _pct(score.recall),
                _pct(score.precision),
                _pct(score.f1),
                str(score.reference_words),
                str(score.output_words),
                str(score.matched_words),
            )
    table.caption = (
        f"{result.pages} pages parsed in {result.parse_seconds:.1f}s. The reference omits the "
        "TOC and page headers/footers, which our output keeps: precision reads low by that much."
    )
    console.print(table)


def _tally_table(
    title: str, label: str, tallies: Mapping[str, Tally], notes: Mapping[str, str] | None = None
) -> Table:
    table = Table(title=title)
    table.add_column(label)
    table.add_column("passed", justify="right")
    table.add_column("rate", justify="right")
    if notes is not None:
        table.add_column("parse error")
    for name, t in tallies.items():
        extra = [notes.get(name, "")] if notes is not None else []
        table.add_row(name, f"{t.passed}/{t.total}", _pct(t.rate), *extra)
    return table


def render_olmocr(console: Console, result: OlmocrResult, pipeline: str, failures: bool) -> None:
    console.print(
        _tally_table(
            f"olmOCR-bench by test type (pdf pipeline: {pipeline})", "type", result.by_type
        )
    )
    console.print(_tally_table("olmOCR-bench by test file", "source", result.by_source))
    console.print(
        _tally_table("olmOCR-bench by PDF", "pdf", result.by_pdf, notes=result.parse_errors)
    )
    console.print(f"[dim]Note: {MATH_NOTE}. {ERROR_NOTE}.[/dim]")
    if failures:
        table = Table(title="olmOCR-bench failed tests")
        for column in ("id", "type", "reason"):
            table.add_column(column)
        for test in result.tests:
            if not test.passed:
                table.add_row(test.id, test.type, test.reason)
        console.print(table)


def render_regression(console: Console, result: RegressionResult, pipeline: str) -> None:
    table = Table(title=f"Docling groundtruth regression baseline (pdf pipeline: {pipeline})")
    for column in ("groundtruth", "kind", "recall", "precision", "F1", "seconds", "error"):
        table.add_column(
            column, justify="right" if column in ("recall", "precision", "F1") else "left"
        )
    for row in result.rows:
        name = row.groundtruth.removeprefix(f"{DOCLING_GROUNDTRUTH_DIR}/")
        if row.score:
            figures = [_pct(row.score.recall), _pct(row.score.precision), _pct(row.score.f1)]
        else:
            figures = ["", "", ""]
        table.add_row(name, row.kind or "", *figures, f"{row.parse_seconds:.1f}", row.error or "")
    table.caption = f"{DOCLING_NOTE}."
    console.print(table)
    if result.missing_sources:
        console.print(f"[dim]No source for: {', '.join(result.missing_sources)}[/dim]")


def _score_text(score: WordScore) -> str:
    return f"{_pct(score.f1)} (R {_pct(score.recall)} / P {_pct(score.precision)})"


def _geotopo_rows(raw: WordScore, nfkc: WordScore) -> list[tuple[str, str, str, str]]:
    # NFKC gets its own line only where it moves F1 noticeably (ligatures, superscripts).
    reference = "independent, hand-corrected"
    delta = 100 * (nfkc.f1 - raw.f1)
    if abs(delta) < NFKC_NOTICEABLE_PT:
        return [("GeoTopo", "word F1", f"{_score_text(raw)}; NFKC {delta:+.1f} pt", reference)]
    return [
        ("GeoTopo", "word F1", _score_text(raw), reference),
        ("GeoTopo", "word F1, NFKC", _score_text(nfkc), reference),
    ]


def summary_rows(sections: Mapping[str, object]) -> list[tuple[str, str, str, str]]:
    """(section, metric, value, reference) lines for the summary table and the JSON."""
    rows: list[tuple[str, str, str, str]] = []
    geotopo, olmocr, regression = (sections.get(k) for k in ("geotopo", "olmocr_bench", "docling"))
    ocr, detector = sections.get("ocr"), sections.get("detector")
    if isinstance(geotopo, GeoTopoResult):
        if geotopo.raw and geotopo.nfkc:
            rows.extend(_geotopo_rows(geotopo.raw, geotopo.nfkc))
        if geotopo.error:
            rows.append(("GeoTopo", "parse", geotopo.error, "independent, hand-corrected"))
    if isinstance(olmocr, OlmocrResult):
        rows.append(
            (
                "olmOCR-bench",
                "pass rate, dataset.jsonl",
                _tally_text(olmocr.human_verified),
                "independent, human-verified",
            )
        )
        rows.append(
            (
                "olmOCR-bench",
                "pass rate, all incl. baselines",
                _tally_text(olmocr.overall),
                "independent, human-verified",
            )
        )
        for name, t in olmocr.by_type.items():
            rows.append(("olmOCR-bench", f"  {name}", _tally_text(t), ""))
    if isinstance(regression, RegressionResult):
        parsed = len(regression.rows) - regression.failures
        rows.append(
            (
                "Docling GT",
                "mean word F1, parsed files",
                f"{_pct(regression.mean_f1_parsed)} ({parsed}/{len(regression.rows)} parsed)",
                "NOT independent: regression only",
            )
        )
        rows.append(
            (
                "Docling GT",
                "mean word F1, failures as 0",
                _pct(regression.mean_f1_all),
                "NOT independent: regression only",
            )
        )
    if isinstance(ocr, OcrResult):
        reference = f"text layers of {len(ocr.rows)} pages, rendered at {OCR_DPI_SCAN} dpi"
        rows.append(("OCR", "word recall", _pct(ocr.mean_recall), reference))
        rows.append(("OCR", "word precision", _pct(ocr.mean_precision), reference))
        rows.append(("OCR", "median CER", _pct(ocr.median_cer), reference))
        rows.append(("OCR", "seconds a page", f"{ocr.seconds_per_page:.1f}", "parse + OCR"))
    if isinstance(detector, DetectorResult):
        found = len(detector.known_unreadable) - len(detector.missed)
        rows.append(
            (
                "Unreadable text",
                "known unreadable pages found",
                f"{found}/{len(detector.known_unreadable)}",
                "pages checked by eye",
            )
        )
        rows.append(
            (
                "Unreadable text",
                "readable pages flagged",
                f"{len(detector.false_positives)}/{detector.pages - len(detector.known_unreadable)}"
                + (f" ({', '.join(detector.false_positives)})" if detector.false_positives else ""),
                "every text page of the corpus",
            )
        )
    return rows


def render_summary(
    console: Console,
    rows: Sequence[tuple[str, str, str, str]],
    pipeline: str,
    timing: Mapping[str, float],
) -> None:
    table = Table(title=f"Parse quality summary (pdf pipeline: {pipeline})")
    for column in ("section", "metric", "value", "reference"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    table.caption = "seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items())
    console.print(table)


# --------------------------------------------------------------------------- main

SECTIONS: dict[str, Callable[[Path, ParseCache], object]] = {
    "geotopo": run_geotopo,
    "olmocr_bench": run_olmocr,
    "docling": run_regression,
    "ocr": run_ocr,
    "detector": run_detector,
}


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.parse_quality", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--corpus", type=Path, help="the shared corpus (default: beside the repo)")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--failures", action="store_true", help="list failed olmOCR tests")
    return parser.parse_args(argv)


def run_sections(
    corpus: Path, cache: ParseCache, console: Console
) -> tuple[dict[str, object], dict[str, float]]:
    """Every section's result (or a ``{"skipped": why}``), and its seconds, parsing included."""
    sections: dict[str, object] = {}
    timing: dict[str, float] = {}
    started = time.perf_counter()
    for name, run in SECTIONS.items():
        start = time.perf_counter()
        try:
            sections[name] = run(corpus, cache)
        except MissingInput as exc:
            sections[name] = {"skipped": str(exc)}
            console.print(f"[yellow]{name} skipped: {exc}[/yellow]")
        timing[name] = time.perf_counter() - start
    timing["total"] = time.perf_counter() - started
    return sections, timing


def render_sections(
    console: Console, sections: Mapping[str, object], pipeline: str, failures: bool
) -> None:
    for result in sections.values():
        if isinstance(result, GeoTopoResult):
            render_geotopo(console, result, pipeline)
        elif isinstance(result, OlmocrResult):
            render_olmocr(console, result, pipeline, failures)
        elif isinstance(result, RegressionResult):
            render_regression(console, result, pipeline)


def _jsonable(result: object) -> object:
    return asdict(result) if is_dataclass(result) and not isinstance(result, type) else result


def build_report(
    corpus: str,
    pipeline: str,
    sections: Mapping[str, object],
    timing: Mapping[str, float],
    rows: Sequence[tuple[str, str, str, str]],
) -> dict[str, Any]:
    columns = ("section", "metric", "value", "reference")
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "corpus": corpus,
        "pdf_pipeline": pipeline,
        "timing_s": dict(timing),
        "notes": {"olmocr_math": MATH_NOTE, "docling": DOCLING_NOTE, "errors": ERROR_NOTE},
        "summary": [dict(zip(columns, row, strict=True)) for row in rows],
        "sections": {name: _jsonable(result) for name, result in sections.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    console = Console()
    corpus = args.corpus or default_corpus()
    if not corpus.is_dir():
        console.print(
            f"[yellow]corpus not found at {corpus}[/yellow] (use --corpus or DOCINDEX_CORPUS):"
            " every section is skipped"
        )
    # The native pipeline needs no model; this stops any library from trying the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Imported here, not at the top: Docling is slow to load and the scoring functions (and
    # their tests) do not need it.
    from docindex.pipeline.parsing import DocumentParser

    parser = DocumentParser("auto")
    sections, timing = run_sections(corpus, ParseCache(parser, corpus), console)
    render_sections(console, sections, parser.pdf_pipeline, args.failures)
    rows = summary_rows(sections)
    render_summary(console, rows, parser.pdf_pipeline, timing)
    if args.json:
        report = build_report(str(corpus), parser.pdf_pipeline, sections, timing, rows)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        console.print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
