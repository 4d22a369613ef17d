"""The scoring functions of bench/parse_quality.py, on tiny hand-made inputs.

No parsing and no services: these tests use none of the session fixtures in conftest.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench.parse_quality import (
    char_error_rate,
    check_baseline,
    check_math,
    check_order,
    check_presence,
    check_table,
    docling_pairs,
    lcs_length,
    near_match_starts,
    normalize_text,
    parse_markdown_tables,
    partial_ratio,
    ratio,
    run_check,
    word_score,
)


def _lcs_dp(a: str, b: str) -> int:
    previous = [0] * (len(b) + 1)
    for char_a in a:
        current = [0]
        for j, char_b in enumerate(b, start=1):
            current.append(
                previous[j - 1] + 1 if char_a == char_b else max(previous[j], current[j - 1])
            )
        previous = current
    return previous[-1]


# --------------------------------------------------------------------------- word scores


def test_word_recall_and_precision() -> None:
    score = word_score("the cat sat on the mat", "The cat sat on a mat.")
    # Reference: the cat sat on a mat (6); output has "the" twice and no "a": 5 shared.
    assert (score.reference_words, score.output_words, score.matched_words) == (6, 6, 5)
    assert score.recall == pytest.approx(5 / 6)
    assert score.precision == pytest.approx(5 / 6)
    assert score.f1 == pytest.approx(5 / 6)


def test_word_score_extra_output_lowers_precision_only() -> None:
    score = word_score("alpha beta gamma delta", "alpha beta")
    assert score.recall == 1.0
    assert score.precision == 0.5


def test_nfkc_folds_ligatures() -> None:
    assert word_score("\ufb01nd", "find").recall == 0.0
    assert word_score("\ufb01nd", "find", nfkc=True).recall == 1.0


def test_underscore_escapes_do_not_split_words() -> None:
    assert word_score(r"snake\_case", "snake_case").f1 == 1.0


def test_char_error_rate() -> None:
    assert char_error_rate("kitten", "sitting") == pytest.approx(3 / 7)
    assert char_error_rate("the  cat\nsat", "the cat sat") == 0.0
    assert char_error_rate("", "") == 0.0 and char_error_rate("x", "") == 1.0
    assert char_error_rate("", "abc") == 1.0


def test_empty_texts() -> None:
    assert word_score("", "").f1 == 1.0
    empty_output = word_score("", "some words")
    assert (empty_output.recall, empty_output.precision, empty_output.f1) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- fuzzy matching


def test_ratio_matches_rapidfuzz_figures() -> None:
    # rapidfuzz's documented examples: fuzz.ratio = 96.55, fuzz.partial_ratio = 100.
    assert ratio("this is a test", "this is a test!") == pytest.approx(0.9655, abs=1e-4)
    assert partial_ratio("this is a test", "this is a test!") == 1.0
    assert partial_ratio("abcd", "xxabxdxx") == pytest.approx(0.75)  # window "abxd": LCS 3
    assert partial_ratio("", "") == 1.0


def test_bit_parallel_lcs_agrees_with_dynamic_programming() -> None:
    rng = random.Random(7)
    for _ in range(200):
        a = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 12)))
        assert lcs_length(a, b) == _lcs_dp(a, b), (a, b)


def test_near_match_starts() -> None:
    assert near_match_starts("abc", "xxabcxxabc", 0) == [2, 7]
    assert near_match_starts("hello", "say hallo to me", 0) == []
    assert near_match_starts("hello", "say hallo to me", 1) == [4]


def test_normalize_text_drops_markup_and_fancy_quotes() -> None:
    assert normalize_text("**Bold**  and\n_it_ \u201cq\u201d \u2013 x") == 'Bold and it "q" - x'


# --------------------------------------------------------------------------- presence / order


def test_present_and_absent() -> None:
    markdown = "The quick brown fox\njumps over the lazy dog."
    present = {"type": "present", "text": "quick brown fox jumps"}
    assert check_presence(present, markdown).passed
    assert not check_presence({**present, "text": "quick red fox"}, markdown).passed
    absent = {"type": "absent", "text": "lazy dog"}
    assert not check_presence(absent, markdown).passed
    assert check_presence({**absent, "text": "sleepy cat"}, markdown).passed


def test_presence_tolerates_max_diffs_and_honours_case() -> None:
    markdown = "and so the quick brwn fox ran"
    spec = {"type": "present", "text": "the quick brown fox"}
    assert not check_presence(spec, markdown).passed
    assert check_presence({**spec, "max_diffs": 1}, markdown).passed
    assert not check_presence({"type": "present", "text": "THE QUICK"}, markdown).passed
    assert check_presence(
        {"type": "present", "text": "THE QUICK", "case_sensitive": False}, markdown
    ).passed


def test_absent_only_looks_at_the_last_n_characters() -> None:
    markdown = "Page 1\n\nbody text that goes on for a while\n\nfooter"
    spec = {"type": "absent", "text": "Page 1", "last_n": 20}
    assert check_presence(spec, markdown).passed
    assert not check_presence({**spec, "text": "footer"}, markdown).passed


def test_order() -> None:
    markdown = "Introduction\n\nMethods\n\nResults"
    spec = {"type": "order", "before": "Introduction", "after": "Results"}
    assert check_order(spec, markdown).passed
    assert not check_order({**spec, "before": "Results", "after": "Methods"}, markdown).passed
    assert not check_order({**spec, "before": "Discussion"}, markdown).passed
    fuzzy = {"type": "order", "before": "Introductoin", "after": "Results", "max_diffs": 2}
    assert check_order(fuzzy, markdown).passed


# --------------------------------------------------------------------------- tables

TABLE = """Some text before.

| Source | Words | Bytes |
|--------|-------|-------|
| arXiv  | 19.3B | 77.2B |
| Wiki   | 3.16B | 16.2B |

After the table.
"""


def test_parse_markdown_table() -> None:
    (table,) = parse_markdown_tables(TABLE)
    assert table.rows == (
        ("Source", "Words", "Bytes"),
        ("arXiv", "19.3B", "77.2B"),
        ("Wiki", "3.16B", "16.2B"),
    )


@pytest.mark.parametrize(
    ("relations", "passes"),
    [
        ({"left": "arXiv", "right": "77.2B"}, True),
        ({"up": "Words", "down": "3.16B"}, True),
        ({"top_heading": "Words", "left_heading": "arXiv"}, True),
        ({"left": "Wiki"}, False),
        ({"up": "Bytes"}, False),
        ({"top_heading": "Bytes"}, False),
    ],
)
def test_table_neighbours(relations: dict[str, str], passes: bool) -> None:
    spec = {"type": "table", "cell": "19.3B", **relations}
    assert check_table(spec, TABLE).passed is passes


def test_table_headings_are_the_first_row_and_column() -> None:
    cell = {"type": "table", "cell": "16.2B"}
    assert check_table({**cell, "top_heading": "Bytes", "left_heading": "Wiki"}, TABLE).passed
    # Cells above and to the left that are not in the first row or column are no headings.
    assert not check_table({**cell, "top_heading": "77.2B"}, TABLE).passed
    assert not check_table({**cell, "left_heading": "3.16B"}, TABLE).passed


def test_table_needs_a_table_and_the_cell() -> None:
    assert not check_table({"type": "table", "cell": "19.3B"}, "19.3B in prose").passed
    assert not check_table({"type": "table", "cell": "42.0B"}, TABLE).passed


# --------------------------------------------------------------------------- math / baseline


def test_math() -> None:
    spec = {"type": "math", "math": "a^{2}+b^{2}=c^{2}"}
    assert check_math(spec, "Pythagoras: $a^{2}+b^{2}=c^{2}$").passed
    assert check_math(spec, "Pythagoras: a\u00b2 + b\u00b2 = c\u00b2").passed
    assert not check_math(spec, "a +\n\n2 b =\n\n2 c 2").passed
    euler = {"type": "math", "math": r"e^{i \pi}+1=0"}
    assert check_math(euler, "e i\u03c0 + 1 = 0").passed


def test_baseline() -> None:
    assert check_baseline({"type": "baseline"}, "A page of text.").passed
    assert not check_baseline({"type": "baseline"}, "<!-- -->").passed
    assert not check_baseline({"type": "baseline"}, "text " + "ab" * 40).passed
    assert not check_baseline({"type": "baseline"}, "text \u4e2d\u6587").passed
    blank = {"type": "baseline", "max_length": 10}
    assert check_baseline(blank, "12").passed
    assert not check_baseline(blank, "eleven chars").passed


def test_run_check_rejects_unknown_types() -> None:
    assert not run_check({"type": "footnote"}, "text").passed


# --------------------------------------------------------------------------- corpus mapping


def test_docling_pairs_follow_the_manifest_then_names(tmp_path: Path) -> None:
    for name in (
        "groundtruth/docling/scan.tesseract.full_page.md",
        "groundtruth/docling/report.docx.md",
        "groundtruth/docling/orphan.md",
        "pdf/docling/scan.pdf",
        "office/docling/report.docx",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "MANIFEST.tsv").write_text(
        "file\tnotes\npdf/docling/scan.pdf\tGT: groundtruth/docling/scan.tesseract.full_page.md\n"
    )
    pairs, missing = docling_pairs(tmp_path)
    assert pairs == [
        ("groundtruth/docling/report.docx.md", "office/docling/report.docx"),
        ("groundtruth/docling/scan.tesseract.full_page.md", "pdf/docling/scan.pdf"),
    ]
    assert missing == ["groundtruth/docling/orphan.md"]
