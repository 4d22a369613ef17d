"""The question set: loading it, reading the corpus's text, and checking every question
against that text so the set cannot rot.

A question (one JSON object a line in ``questions.jsonl``):

- ``id``: unique, stable; ``kind``: one of ``KINDS``; ``query``: what a user would type.
- ``file``: the corpus-relative path of the document that answers it.
- ``pages``: the 1-based pages that answer it, or ``null`` for formats without pages
  (Office and HTML files: counted in document recall and MRR, not in page recall).
- ``evidence``: a span of the answer as the document's text has it. It must appear on one
  of ``pages`` and on no page of ``file`` that is not listed (so ``pages`` is complete).
- ``lang`` (optional): the query's language when it is not English.
- ``evidence_in`` (optional): a corpus-relative reference text holding ``evidence`` for a
  page that has no text layer (a scan): the page must then have (next to) no text.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

QUESTIONS = Path(__file__).with_name("questions.jsonl")

KINDS = {
    "paraphrase": "asks in other words than the document's",
    "identifier": "an identifier, code, section, figure or table number",
    "table": "the value of a table cell",
    "number": "a figure or a date stated in running text",
    "language": "asked in the document's language (Korean, German, Arabic, Persian), "
    "or in English about a document in another language",
    "form_drawing": "a form's field, a drawing's or chart's labels, a flowchart",
    "scanned": "a scanned or handwritten page (OCR'd text layer, or none)",
}
REQUIRED = ("id", "kind", "query", "file", "pages", "evidence")
MIN_QUESTIONS = 60
# A page "without a text layer" may still carry a few stray characters.
NO_TEXT_LAYER_CHARS = 40

# Formats whose text is read as one page (they have no pages to cite).
OFFICE_ZIP = {".docx", ".pptx", ".xlsx", ".xlsm"}
HTML = {".html", ".htm"}


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    query: str
    file: str
    pages: tuple[int, ...] | None
    evidence: str
    lang: str = "en"
    evidence_in: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, object]) -> Question:
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise ValueError(f"{raw.get('id', raw)}: missing {', '.join(missing)}")
        unknown = set(raw) - {*REQUIRED, "lang", "evidence_in"}
        if unknown:
            raise ValueError(f"{raw['id']}: unknown fields {sorted(unknown)}")
        pages = raw["pages"]
        if pages is not None and (
            not isinstance(pages, list)
            or not pages
            or not all(isinstance(p, int) and p >= 1 for p in pages)
        ):
            raise ValueError(f"{raw['id']}: pages must be null or a list of pages >= 1")
        if raw["kind"] not in KINDS:
            raise ValueError(f"{raw['id']}: unknown kind {raw['kind']!r}")
        for key in ("id", "query", "file", "evidence"):
            if not isinstance(raw[key], str) or not str(raw[key]).strip():
                raise ValueError(f"{raw.get('id')}: {key} must be a non-empty string")
        return cls(
            id=str(raw["id"]),
            kind=str(raw["kind"]),
            query=str(raw["query"]),
            file=str(raw["file"]),
            pages=tuple(pages) if isinstance(pages, list) else None,
            evidence=str(raw["evidence"]),
            lang=str(raw.get("lang", "en")),
            evidence_in=str(raw["evidence_in"]) if raw.get("evidence_in") else None,
        )


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    questions = [
        Question.from_json(json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    ids = [q.id for q in questions]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return questions


# --------------------------------------------------------------------------- corpus text

_INVISIBLE = dict.fromkeys(map(ord, "\ufffe\u00ad\u200b\u200c\u200d\ufeff"))


def match_form(text: str) -> str:
    """What evidence is compared in: NFKC, case-folded, without whitespace (a PDF's text
    layer breaks lines inside words and phrases, Korean ones inside words) and without the
    invisible soft-hyphen and joiner characters."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return re.sub(r"\s+", "", text)


_HTML_DROP = re.compile(r"(?is)<(script|style|head)\b.*?</\1\s*>")
_XML_BREAK = re.compile(r"</(?:w:p|a:p|si|c|row|w:tc)>|<(?:w:tab|w:br|a:br)\b[^>]*/?>")
_TAG = re.compile(r"<[^>]+>")


def _html_text(raw: str) -> str:
    return html.unescape(_TAG.sub(" ", _HTML_DROP.sub(" ", raw)))


def _office_text(path: Path) -> str:
    """The text of an Office Open XML file, read from its XML parts: runs of a paragraph
    joined, paragraphs and cells apart. Independent of any parser docindex uses."""
    parts: list[str] = []
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            if not name.endswith(".xml") or name.startswith(("docProps/", "[Content_Types]")):
                continue
            xml = z.read(name).decode("utf-8", "replace")
            parts.append(html.unescape(_TAG.sub("", _XML_BREAK.sub(" ", xml))))
    return "\n".join(parts)


@cache
def page_texts(corpus: Path, relative: str) -> tuple[str, ...]:
    """The text of each page of a corpus file: the PDF text layer (pypdfium2) page by page;
    Office and HTML files as one page."""
    path = corpus / relative
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(path)
        try:
            return tuple(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
        finally:
            doc.close()
    if suffix in OFFICE_ZIP:
        return (_office_text(path),)
    if suffix in HTML:
        return (_html_text(path.read_text(encoding="utf-8", errors="replace")),)
    return (path.read_text(encoding="utf-8", errors="replace"),)


# --------------------------------------------------------------------------- validation


def validate(question: Question, corpus: Path) -> list[str]:
    """What is wrong with one question against the corpus's text (nothing: an empty list)."""
    q = question
    if not (corpus / q.file).is_file():
        return [f"{q.id}: {q.file} is not in the corpus"]
    texts = page_texts(corpus, q.file)
    is_paged = (corpus / q.file).suffix.lower() == ".pdf"
    if is_paged and q.pages is None:
        return [f"{q.id}: {q.file} has pages: list the ones that answer"]
    if not is_paged and q.pages is not None:
        return [f"{q.id}: {q.file} has no pages: pages must be null"]
    if q.pages is not None and max(q.pages) > len(texts):
        return [f"{q.id}: {q.file} has {len(texts)} pages, not {max(q.pages)}"]
    needle = match_form(q.evidence)
    if not needle:
        return [f"{q.id}: empty evidence"]
    if q.evidence_in is not None:
        problems = []
        reference = corpus / q.evidence_in
        if not reference.is_file():
            return [f"{q.id}: reference {q.evidence_in} is not in the corpus"]
        if needle not in match_form(reference.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{q.id}: evidence not in {q.evidence_in}: {q.evidence!r}")
        for p in q.pages or (1,):
            if len(match_form(texts[p - 1])) > NO_TEXT_LAYER_CHARS:
                problems.append(
                    f"{q.id}: page {p} has a text layer: cite the evidence from it instead"
                )
        return problems
    found = [i + 1 for i, text in enumerate(texts) if needle in match_form(text)]
    if not found:
        return [f"{q.id}: evidence not in {q.file}: {q.evidence!r}"]
    if q.pages is None:
        return []
    problems = []
    if not set(found) & set(q.pages):
        problems.append(f"{q.id}: evidence is on pages {found}, not on {list(q.pages)}")
    elif unlisted := sorted(set(found) - set(q.pages)):
        problems.append(f"{q.id}: evidence also on pages {unlisted}: list them too")
    return problems


def validate_all(questions: Iterable[Question], corpus: Path) -> list[str]:
    return [problem for q in questions for problem in validate(q, corpus)]


def kinds_missing(questions: Sequence[Question]) -> list[str]:
    return sorted(set(KINDS) - {q.kind for q in questions})
