"""Scoring a ranked answer list against a question, and the BM25 baseline.

A ranked list is what a search returned, best first: each result names its file and pages
(a chunk of the service, or a whole page of the baseline). For a question with file F and
pages P:

- document hit@k: one of the first k results is from F;
- page hit@k: one of the first k results is from F and shares a page with P (questions
  without pages, Office and HTML files, are left out of page recall);
- reciprocal rank@k: 1 / the rank of the first result from F among the first k, else 0.

Recall@k is the mean hit@k over the questions; MRR@k the mean reciprocal rank.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

K_RECALL = 5
K_MRR = 10


@dataclass(frozen=True)
class Result:
    file: str | None  # None: a document the harness could not map to a corpus file
    pages: tuple[int, ...] = ()


@dataclass(frozen=True)
class Score:
    doc_hit: bool
    page_hit: bool | None  # None: the question has no pages
    reciprocal_rank: float
    rank: int | None  # 1-based rank of the first result from the right file, within K_MRR


def score(
    results: Sequence[Result], file: str, pages: Iterable[int] | None, k: int = K_RECALL
) -> Score:
    ranks = [i for i, r in enumerate(results[:K_MRR], start=1) if r.file == file]
    rank = ranks[0] if ranks else None
    top = results[:k]
    expected = set(pages) if pages is not None else None
    return Score(
        doc_hit=any(r.file == file for r in top),
        page_hit=None
        if expected is None
        else any(r.file == file and expected & set(r.pages) for r in top),
        reciprocal_rank=1.0 / rank if rank else 0.0,
        rank=rank,
    )


@dataclass
class Summary:
    questions: int = 0
    doc_hits: int = 0
    paged: int = 0
    page_hits: int = 0
    rr_sum: float = 0.0

    def add(self, s: Score) -> None:
        self.questions += 1
        self.doc_hits += s.doc_hit
        self.rr_sum += s.reciprocal_rank
        if s.page_hit is not None:
            self.paged += 1
            self.page_hits += s.page_hit

    @property
    def doc_recall(self) -> float:
        return self.doc_hits / self.questions if self.questions else math.nan

    @property
    def page_recall(self) -> float:
        return self.page_hits / self.paged if self.paged else math.nan

    @property
    def mrr(self) -> float:
        return self.rr_sum / self.questions if self.questions else math.nan

    def as_dict(self) -> dict[str, float | int]:
        return {
            "questions": self.questions,
            "questions_with_pages": self.paged,
            "doc_recall_at_5": round(self.doc_recall, 4),
            "page_recall_at_5": round(self.page_recall, 4),
            "mrr_at_10": round(self.mrr, 4),
        }


def summarize(scores: Iterable[tuple[str, Score]]) -> dict[str, Summary]:
    """``(kind, score)`` pairs → a summary per kind and ``"all"``."""
    out: dict[str, Summary] = {"all": Summary()}
    for kind, s in scores:
        out["all"].add(s)
        out.setdefault(kind, Summary()).add(s)
    return out


# --------------------------------------------------------------------------- BM25

_TOKEN = re.compile(r"[^\W_]+")


def tokenize(text: str) -> list[str]:
    """Simple tokenization: NFKC, case-folded runs of letters and digits."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


@dataclass
class BM25:
    """Okapi BM25 over a list of documents (here: one per page), k1 = 1.2, b = 0.75,
    idf = ln(1 + (N - df + 0.5) / (df + 0.5))."""

    docs: Sequence[str]
    k1: float = 1.2
    b: float = 0.75
    _tf: list[Counter[str]] = field(init=False, repr=False)
    _len: list[int] = field(init=False, repr=False)
    _idf: dict[str, float] = field(init=False, repr=False)
    _avg: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._tf = [Counter(tokenize(d)) for d in self.docs]
        self._len = [sum(tf.values()) for tf in self._tf]
        self._avg = (sum(self._len) / len(self._len)) if self._len else 0.0
        df: Counter[str] = Counter()
        for tf in self._tf:
            df.update(tf.keys())
        n = len(self.docs)
        self._idf = {t: math.log(1 + (n - d + 0.5) / (d + 0.5)) for t, d in df.items()}

    def scores(self, query: str) -> list[float]:
        terms = tokenize(query)
        out = []
        for tf, length in zip(self._tf, self._len, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / self._avg) if self._avg else 0
            out.append(
                sum(self._idf[t] * tf[t] * (self.k1 + 1) / (tf[t] + norm) for t in terms if t in tf)
            )
        return out

    def top(self, query: str, k: int) -> list[int]:
        """Indexes of the k best documents, best first (ties: the earlier document);
        documents that share no term with the query are not returned."""
        scored = [(s, i) for i, s in enumerate(self.scores(query)) if s > 0]
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [i for _, i in scored[:k]]
