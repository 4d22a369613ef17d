"""The question set of ``make eval`` and its scoring (bench/eval/), without services.

The set's shape and the metrics run anywhere; checking every question against the corpus's
text needs the shared corpus beside the checkout and is skipped without it.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from bench.eval.metrics import BM25, Result, score, summarize, tokenize
from bench.eval.questions import (
    KINDS,
    MIN_QUESTIONS,
    Question,
    kinds_missing,
    load_questions,
    match_form,
    page_texts,
    validate,
    validate_all,
)
from bench.eval.run import service_rankings
from bench.parse_quality import default_corpus

PAGED = (".pdf",)


def test_the_set_has_enough_questions_of_every_kind() -> None:
    questions = load_questions()
    assert len(questions) >= MIN_QUESTIONS
    assert kinds_missing(questions) == []
    per_kind = Counter(q.kind for q in questions)
    assert min(per_kind.values()) >= 4, per_kind
    # Not a set about one document: no file carries more than a sixth of the questions.
    assert max(Counter(q.file for q in questions).values()) <= len(questions) / 6


def test_every_question_is_complete() -> None:
    for q in load_questions():
        assert q.query.strip() and q.evidence.strip(), q.id
        assert not Path(q.file).is_absolute() and ".." not in Path(q.file).parts, q.id
        assert (q.pages is not None) == q.file.lower().endswith(PAGED), q.id
        # A question is asked, not pasted: the query is not the evidence itself (an
        # identifier is typed as it is written).
        if q.kind != "identifier":
            assert match_form(q.query) != match_form(q.evidence), q.id


def test_a_line_missing_a_field_or_with_a_bad_kind_is_refused(tmp_path: Path) -> None:
    good = {
        "id": "x",
        "kind": "table",
        "query": "q",
        "file": "pdf/a.pdf",
        "pages": [1],
        "evidence": "e",
    }
    path = tmp_path / "q.jsonl"
    for bad in (
        {k: v for k, v in good.items() if k != "pages"},
        {**good, "kind": "riddle"},
        {**good, "pages": [0]},
        {**good, "pages": []},
        {**good, "extra": 1},
    ):
        path.write_text(json.dumps(bad) + "\n")
        with pytest.raises(ValueError):
            load_questions(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_questions(path)


# --------------------------------------------------------------------------- metrics


def test_score_by_hand() -> None:
    results = [
        Result("b.pdf", (1,)),
        Result("a.pdf", (3,)),
        Result("c.pdf", (2,)),
        Result(None),
        Result("b.pdf", (2,)),
        Result("a.pdf", (2, 4)),  # the right page, but sixth: outside @5
    ]
    s = score(results, "a.pdf", [2])
    assert s.doc_hit and s.page_hit is False and s.rank == 2 and s.reciprocal_rank == 0.5
    s = score(results, "a.pdf", [3, 9])
    assert s.page_hit is True
    s = score(results, "d.docx", None)
    assert not s.doc_hit and s.page_hit is None and s.rank is None and s.reciprocal_rank == 0
    s = score(results, "a.pdf", None)
    assert s.doc_hit and s.page_hit is None
    # A hit at rank 11 counts for nothing: MRR is @10.
    far = [Result("z.pdf")] * 10 + [Result("a.pdf", (1,))]
    assert score(far, "a.pdf", [1]).reciprocal_rank == 0.0


def test_summaries_by_hand() -> None:
    results = [Result("b.pdf", (1,)), Result("a.pdf", (1,))]
    scored = [
        ("table", score(results, "a.pdf", [1])),  # doc, page, rr 1/2
        ("table", score(results, "b.pdf", [2])),  # doc, no page, rr 1
        ("number", score(results, "c.docx", None)),  # nothing, no pages
    ]
    out = summarize(scored)
    assert out["all"].as_dict() == {
        "questions": 3,
        "questions_with_pages": 2,
        "doc_recall_at_5": round(2 / 3, 4),
        "page_recall_at_5": 0.5,
        "mrr_at_10": 0.5,
    }
    assert out["table"].doc_recall == 1.0 and out["table"].mrr == 0.75
    assert math.isnan(out["number"].page_recall)


def test_bm25_by_hand() -> None:
    docs = ["the cat sat", "the dog sat on the mat", "a bird"]
    bm25 = BM25(docs)
    # "cat": df 1 of N 3 → idf ln(1 + 2.5 / 1.5); doc 0 has tf 1, length 3, avgdl 11/3.
    idf = math.log(1 + 2.5 / 1.5)
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / (11 / 3))
    assert bm25.scores("cat") == pytest.approx([idf * 2.2 / (1 + norm), 0.0, 0.0])
    assert bm25.top("dog mat", 3) == [1]  # documents without a query term are not returned
    assert bm25.top("sat", 3) == [0, 1]  # same tf: the shorter page first
    assert bm25.top("BIRD!", 3) == [2]
    assert tokenize("Ünïcode_x 12,5 Straße") == ["ünïcode", "x", "12", "5", "strasse"]


# --------------------------------------------------------------------------- asking the API


def _api(
    modes: list[str] | None, seen: list[dict[str, object]], refuse_mode: bool = False
) -> httpx.AsyncClient:
    """A stand-in for the API: its OpenAPI names ``modes`` (none: no ``mode`` field), and
    search answers one hit on page 2 of document "d1" (or 422 on ``mode``); the search
    requests it gets are appended to ``seen``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            props: dict[str, object] = {"query": {"type": "string"}}
            if modes is not None:
                props["mode"] = {"$ref": "#/components/schemas/SearchMode"}
            schemas = {"SearchRequest": {"properties": props}, "SearchMode": {"enum": modes}}
            return httpx.Response(200, json={"components": {"schemas": schemas}})
        body = json.loads(request.content)
        seen.append(body)
        if refuse_mode and "mode" in body:
            detail = [{"loc": ["body", "mode"], "msg": "unexpected", "type": "x"}]
            return httpx.Response(422, json={"detail": detail})
        hit = {"document_id": "d1", "pages": [2], "score": 1.0}
        return httpx.Response(200, json={"model": "m", "results": [hit]})

    return httpx.AsyncClient(transport=httpx.MockTransport(handle), base_url="http://api")


async def test_modes_the_api_lacks_are_reported_not_available() -> None:
    q = Question("q1", "table", "query", "a.pdf", (2,), "e")
    modes = ("vector", "keyword", "hybrid")
    seen: list[dict[str, object]] = []
    async with _api(None, seen) as http:
        out = await service_rankings(http, {}, {"d1": "a.pdf"}, [q], modes, Console())
        assert out["vector"] == {"q1": [Result("a.pdf", (2,))]}
        assert "not available" in str(out["keyword"]) and "not available" in str(out["hybrid"])
        assert seen == [{"query": "query", "top_k": 10}]
    seen.clear()
    async with _api(["vector", "keyword", "hybrid"], seen) as http:
        out = await service_rankings(http, {}, {"d1": "a.pdf"}, [q], modes, Console())
        assert all(out[m] == {"q1": [Result("a.pdf", (2,))]} for m in modes)
        assert [b["mode"] for b in seen] == list(modes)
    async with _api(["vector", "keyword", "hybrid"], [], refuse_mode=True) as http:
        out = await service_rankings(http, {}, {"d1": "a.pdf"}, [q], ("hybrid",), Console())
        assert str(out["hybrid"]).startswith("not available: 422")


# --------------------------------------------------------------------------- corpus text


def test_evidence_is_compared_without_layout() -> None:
    assert match_form("Lucene\ufffe-\nBM25  SYSTEM") == match_form("lucene-bm25 system")
    assert match_form("작성\n자 불이익") == match_form("작성자 불이익")


def test_validation_finds_wrong_pages_and_missing_evidence(tmp_path: Path) -> None:
    (tmp_path / "office").mkdir()
    with zipfile.ZipFile(tmp_path / "office/a.docx", "w") as z:
        z.writestr(
            "word/document.xml",
            "<w:document><w:p><w:r><w:t>Calories per </w:t></w:r><w:r><w:t>portion</w:t>"
            "</w:r></w:p><w:p><w:r><w:t>150</w:t></w:r></w:p></w:document>",
        )
    (tmp_path / "office/b.html").write_text(
        "<html><head><title>x</title></head><body><p>Quack&nbsp;Quackling</p>"
        "<script>var hidden = 1;</script></body></html>"
    )
    assert "Calories per portion 150" in " ".join(page_texts(tmp_path, "office/a.docx")[0].split())

    def q(file: str, evidence: str, pages: list[int] | None = None) -> Question:
        return Question("q", "table", "query", file, tuple(pages) if pages else None, evidence)

    assert validate(q("office/a.docx", "portion 150"), tmp_path) == []
    assert validate(q("office/b.html", "quack quackling"), tmp_path) == []
    assert validate(q("office/b.html", "hidden"), tmp_path) != []
    assert validate(q("office/a.docx", "portion", [1]), tmp_path) != []  # no pages to cite
    assert validate(q("office/none.docx", "x"), tmp_path) != []


@pytest.mark.skipif(
    not default_corpus().is_dir(), reason="needs the shared corpus beside the checkout"
)
def test_every_question_holds_against_the_corpus_text() -> None:
    corpus = default_corpus()
    assert validate_all(load_questions(), corpus) == []
    assert set(KINDS) == {q.kind for q in load_questions()}
