"""What each page of a parsed PDF holds: readable text, no text, or an unreadable text layer.

A text layer is unreadable when its fonts map glyphs to the wrong characters (no ToUnicode
map): it comes out as replacement characters, control characters, ``GLYPH<..>``/``(cid:N)``
names, or shifted letters (``7KH TXLFN`` for ``The quick``). Three statistics catch it, each
measured on the corpus (docs/decisions.md, "Unreadable text layers"):

- ``lost``: the share of characters that stand for a glyph with no character, counted inside
  words only (a lone ``\\ufffd`` or private-use character is a bullet or a symbol);
- ``wordlike``: the share of characters in tokens shaped like words or numbers (letters in
  one case pattern, digits), which shifted and punctuation-mapped glyphs are not;
- ``vowels``: the share of vowels among Latin letters, about 0.3-0.45 in the languages
  written with them, 0.1-0.2 in shifted text;
- ``alnum``: the share of letters and digits among the characters, which glyphs numbered
  from 1 and read as ASCII (``!"#$%&'()*+``) bring down to about 0.2.

Plain functions; Docling's document model and pdfium, nothing else.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# Fewer non-space characters than this and a page has no text worth the name (a page number,
# a stray mark): it is OCRed when it has ink.
MIN_PAGE_CHARS = 20
# Thresholds, with their margins on the corpus (docs/decisions.md): readable pages scored at
# most 0.002 lost, at least 0.37 wordlike and 0.26 vowels; unreadable ones at least 0.056
# lost, or at most 0.31 wordlike, or at most 0.20 vowels.
MAX_LOST = 0.02
MIN_WORDLIKE = 0.25
MIN_VOWELS = 0.22
# Readable pages had at least 0.48 (a table of contents' dot leaders), ASCII-read glyphs
# at most 0.25.
MIN_ALNUM = 0.35
# Vowels are only counted on pages with this many Latin letters.
MIN_LATIN_LETTERS = 50

_GLYPH_NAMES = re.compile(r"GLYPH<[^>]*>|\(cid:\d+\)|/uni[0-9A-Fa-f]{4,6}\b|/g\d+\b")
_EDGE_PUNCTUATION = "([{\"'«»„“”‘’<*•·–—-.,;:!?)]}%…/"  # noqa: RUF001 (quotes on purpose)
_WORD = re.compile(r"^(?:[^\W\d_]+(?:['’\-][^\W\d_]+)*|\d+(?:[.,:/\-]\d+)*%?)$")  # noqa: RUF001
_LATIN_VOWELS = frozenset("aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýÿœ")


class PageClass(StrEnum):
    TEXT = "text"  # its text layer is indexed
    OCR = "ocr"  # OCR's text is indexed
    UNREADABLE = "unreadable"  # a text layer of glyph garbage, not indexed, not OCRed
    EMPTY = "empty"  # ink but no text: an image with no text layer, not OCRed or OCR found none
    BLANK = "blank"  # nothing drawn on it
    # Before OCR: the page has ink but no text; to OCR unless OCR is off.
    NO_TEXT = "no_text"


@dataclass(frozen=True)
class TextScore:
    chars: int  # non-space characters
    lost: float = 0.0
    wordlike: float = 1.0
    vowels: float | None = None
    alnum: float = 1.0

    @property
    def readable(self) -> bool:
        if self.chars < MIN_PAGE_CHARS:
            return True  # too little to judge; a page this short is "no text" anyway
        if self.lost > MAX_LOST or self.wordlike < MIN_WORDLIKE or self.alnum < MIN_ALNUM:
            return False
        return self.vowels is None or self.vowels >= MIN_VOWELS


def _lost_glyph(char: str) -> bool:
    if char == "\ufffd":
        return True
    code = ord(char)
    if 0xE000 <= code <= 0xF8FF or code >= 0xF0000:  # private use: a font's own code
        return True
    return unicodedata.category(char) in ("Cc", "Cs", "Co", "Cn") and char not in "\t\n\r"


def _wordlike(core: str) -> bool:
    if not _WORD.match(core):
        return False
    letters = [c for c in core if c.isalpha()]
    if not letters or core.islower() or core.isupper() or core.istitle():
        return True
    # camelCase, iPhone, McDonald, and words of scripts without case
    return core[0].isalpha() and sum(c.isupper() for c in letters[1:]) <= 2


def score_text(text: str) -> TextScore:
    """The statistics of one page's text (see the module's docstring)."""
    names = sum(len(m) for m in _GLYPH_NAMES.findall(text))
    text = _GLYPH_NAMES.sub(" ", text)
    tokens = text.split()
    chars = sum(map(len, tokens)) + names
    if chars == 0:
        return TextScore(chars=0)
    lost = names + sum(sum(map(_lost_glyph, t)) for t in tokens if len(t) > 1)
    wordlike = 0
    for token in tokens:
        core = token.strip(_EDGE_PUNCTUATION)
        if not core or _wordlike(core):  # punctuation alone: bullets, dashes
            wordlike += len(token)
    latin = [
        c.lower()
        for t in tokens
        for c in t
        if c.isalpha() and unicodedata.name(c, "").startswith("LATIN")
    ]
    vowels = (
        sum(c in _LATIN_VOWELS for c in latin) / len(latin)
        if len(latin) >= MIN_LATIN_LETTERS
        else None
    )
    alnum = sum(c.isalnum() for t in tokens for c in t)
    plain = max(1, chars - names)
    return TextScore(
        chars=chars,
        lost=lost / chars,
        wordlike=wordlike / plain,
        vowels=vowels,
        alnum=alnum / plain,
    )


def classify_text(text: str) -> PageClass:
    """``TEXT``, ``UNREADABLE``, or ``NO_TEXT`` (too few characters), from the text alone."""
    score = score_text(text)
    if score.chars < MIN_PAGE_CHARS:
        return PageClass.NO_TEXT
    return PageClass.TEXT if score.readable else PageClass.UNREADABLE


# A page is inked when this share of its pixels, rendered at INK_DPI in grey, is darker than
# INK_LEVEL: a few lines of small print are well above it, scanner noise on a white page not.
INK_DPI = 24
INK_LEVEL = 200
MIN_INK = 0.001


def has_ink(page: object) -> bool:
    """Whether a pdfium page draws anything visible (text, vector art, images). The caller
    holds Docling's pdfium lock."""

    bitmap = page.render(scale=INK_DPI / 72, grayscale=True)  # type: ignore[attr-defined]
    try:
        pixels = bitmap.to_numpy()
        if pixels.ndim == 3:
            pixels = pixels[..., 0]
        return bool((pixels < INK_LEVEL).mean() >= MIN_INK)
    finally:
        bitmap.close()


def page_ranges_text(pages: Iterable[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1-3, 7``."""
    spans: list[list[int]] = []
    for page in sorted(set(pages)):
        if spans and page == spans[-1][1] + 1:
            spans[-1][1] = page
        else:
            spans.append([page, page])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
