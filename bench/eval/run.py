"""``make eval``: index the corpus through the service, ask every question in each search
mode, and score the answers beside a plain BM25 over whole pages.

1. The question set is checked against the corpus's text first (``questions.validate``); a
   question that no longer holds stops the run.
2. A throwaway stack (``bench.stack.Stack``: embedded Postgres, Temporal dev server, one
   worker process of each kind, the API) indexes every document of the corpus (``pdf/``,
   ``office/``, ``olmocr_bench/pdfs/``; the files the questions use and the rest as
   distractors) in one upload, with the settings a deployment gets by default
   (``--embed-model``: the API's DOCINDEX_EMBED_MODEL, which puts that model in the spec).
3. Each question goes to ``POST /v1/search`` with ``top_k`` 10, once per mode. A mode the
   API does not offer (no ``mode`` in its request schema, or a 422 naming ``mode``) is
   reported "not available"; ``vector`` is then asked without the field (what it was).
4. The baseline: BM25 (k1 1.2, b 0.75) over the text layer of every page of every corpus
   file, one BM25 document per page (Office and HTML files: one per file).

Needs ``../shared/corpus`` (or ``DOCINDEX_CORPUS``); without it, says so and exits 0.
Prints tables, writes ``.docindex/eval.json``. A report: it asserts nothing about scores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench.common import corpus_files, default_corpus, upload
from bench.eval.metrics import BM25, K_MRR, Result, Score, score, summarize
from bench.eval.questions import KINDS, Question, load_questions, page_texts, validate_all

MODES = ("vector", "keyword", "hybrid")
BASELINE = "bm25-pages"
TENANT = "eval"


# --------------------------------------------------------------------------- baseline


def baseline_rankings(
    corpus: Path, files: Sequence[str], questions: Sequence[Question]
) -> dict[str, list[Result]]:
    """Top ``K_MRR`` pages of plain BM25 for each question (by id)."""
    units = [
        (rel, page, text)
        for rel in files
        for page, text in enumerate(page_texts(corpus, rel), start=1)
    ]
    bm25 = BM25([text for _, _, text in units])
    return {
        q.id: [Result(units[i][0], (units[i][1],)) for i in bm25.top(q.query, K_MRR)]
        for q in questions
    }


# --------------------------------------------------------------------------- service


async def index_corpus(
    stack: Any,
    files: Sequence[str],
    documents: list[tuple[str, bytes]],
    console: Console,
    api_env: dict[str, str] | None = None,
) -> tuple[str, dict[str, str], dict[str, str], dict[str, Any]]:
    """Upload every file as one run through the API and wait for it; return the API's URL,
    its auth headers, corpus path by document id, and what indexing did."""
    started = time.perf_counter()
    await stack.start_workers(("workflow", "cpu", "gpu", "hosted"))
    _, url = await stack.start_api(**(api_env or {}))
    headers = await stack.api_headers(TENANT)
    console.print(f"  stack up in {time.perf_counter() - started:.0f} s; uploading {len(files)}")
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url) as http:
        body = await upload(http, documents, headers)
    by_id: dict[str, str] = {}
    for rel, doc in zip(files, body["documents"], strict=True):
        by_id.setdefault(doc["document_id"], rel)  # identical bytes: the first file names it
    status = await stack.wait_run_closed(body["run_id"], list(by_id))
    wall = time.perf_counter() - started
    async with httpx.AsyncClient(base_url=url) as http:
        run = (await http.get(f"/v1/runs/{body['run_id']}", headers=headers)).json()
    embedder = run.get("pipeline", {}).get("embedder")
    failed = {by_id[d]: s for d, s in status.items() if s != "completed"}
    console.print(
        f"  indexed {len(status) - len(failed)}/{len(status)} documents in {wall:.0f} s"
        + (f"; not completed: {failed}" if failed else "")
    )
    return (
        url,
        headers,
        by_id,
        {
            "wall_s": round(wall, 1),
            "documents": len(status),
            "not_completed": failed,
            "embedder": embedder,
        },
    )


async def offered_modes(http: httpx.AsyncClient) -> set[str]:
    """The modes the API's search request schema names (none: it has no ``mode``)."""
    schema = (await http.get("/openapi.json")).json()
    prop = schema.get("components", {}).get("schemas", {}).get("SearchRequest", {})
    mode = prop.get("properties", {}).get("mode")
    if mode is None:
        return set()
    text = json.dumps(mode) + json.dumps(schema["components"]["schemas"])
    return {m for m in MODES if f'"{m}"' in text}


def _names_mode(response: httpx.Response) -> bool:
    try:
        detail = response.json().get("detail", [])
    except ValueError:
        return False
    return any("mode" in map(str, d.get("loc", ())) for d in detail if isinstance(d, dict))


class ModeUnavailable(Exception):
    pass


async def ask(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    question: Question,
    mode: str | None,
    by_id: dict[str, str],
) -> list[Result]:
    body: dict[str, Any] = {"query": question.query, "top_k": K_MRR}
    if mode is not None:
        body["mode"] = mode
    response = await http.post("/v1/search", json=body, headers=headers, timeout=120)
    if response.status_code == 422 and _names_mode(response):
        raise ModeUnavailable(response.text[:300])
    response.raise_for_status()
    return [
        Result(by_id.get(h["document_id"]), tuple(h.get("pages") or ()))
        for h in response.json()["results"]
    ]


async def service_rankings(
    http: httpx.AsyncClient,
    headers: dict[str, str],
    by_id: dict[str, str],
    questions: Sequence[Question],
    modes: Sequence[str],
    console: Console,
) -> dict[str, dict[str, list[Result]] | str]:
    """Per mode: the ranked results by question id, or why the mode is not available."""
    out: dict[str, dict[str, list[Result]] | str] = {}
    offered = await offered_modes(http)
    for mode in modes:
        if mode not in offered and mode != "vector":
            out[mode] = "not available: the API's SearchRequest has no such mode"
            continue
        send = mode if mode in offered else None  # vector before modes existed
        started = time.perf_counter()
        try:
            out[mode] = {q.id: await ask(http, headers, q, send, by_id) for q in questions}
        except ModeUnavailable as exc:
            out[mode] = f"not available: 422 on mode ({exc})"
            continue
        took = time.perf_counter() - started
        console.print(f"  {mode}: {len(questions)} questions in {took:.1f} s")
    return out


# --------------------------------------------------------------------------- report


def evaluate(
    questions: Sequence[Question], rankings: dict[str, list[Result]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    scores: list[tuple[Question, Score]] = [
        (q, score(rankings[q.id], q.file, q.pages)) for q in questions
    ]
    summary = {k: v.as_dict() for k, v in summarize((q.kind, s) for q, s in scores).items()}
    per_question = [
        {
            "id": q.id,
            "kind": q.kind,
            **asdict(s),
            "top": [[r.file, list(r.pages)] for r in rankings[q.id][:5]],
        }
        for q, s in scores
    ]
    return summary, per_question


def _fmt(x: float | int) -> str:
    return "n/a" if x != x else f"{x:.3f}"  # NaN: no question of that sort


def render(console: Console, methods: dict[str, Any]) -> None:
    table = Table(title="Retrieval on the question set (top_k 10)")
    for col in ("method", "questions", "doc recall@5", "page recall@5", "MRR@10"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, m in methods.items():
        if isinstance(m, str):
            table.add_row(name, "", "not available", "", "")
            continue
        a = m["summary"]["all"]
        table.add_row(
            name,
            f"{a['questions']} ({a['questions_with_pages']} paged)",
            _fmt(a["doc_recall_at_5"]),
            _fmt(a["page_recall_at_5"]),
            _fmt(a["mrr_at_10"]),
        )
    console.print(table)
    for name, m in methods.items():
        if isinstance(m, str):
            console.print(f"  {name}: {m}")
    ran = {k: v for k, v in methods.items() if not isinstance(v, str)}
    kinds = Table(title="By kind: doc recall@5 / page recall@5 / MRR@10")
    kinds.add_column("kind")
    kinds.add_column("n", justify="right")
    for name in ran:
        kinds.add_column(name, justify="right")
    for kind in KINDS:
        first = next(iter(ran.values()))["summary"].get(kind)
        if first is None:
            continue
        cells = []
        for m in ran.values():
            s = m["summary"][kind]
            figures = (s["doc_recall_at_5"], s["page_recall_at_5"], s["mrr_at_10"])
            cells.append(" / ".join(map(_fmt, figures)))
        kinds.add_row(kind, str(first["questions"]), *cells)
    console.print(kinds)
    for name, m in ran.items():
        misses = [p for p in m["per_question"] if not p["doc_hit"] or p["page_hit"] is False]
        if misses:
            console.print(
                f"[bold]{name}[/bold] misses ({len(misses)}): "
                + ", ".join(p["id"] + ("" if p["doc_hit"] else " (doc)") for p in misses)
            )


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted changes" if dirty else "")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, default=None, help="default: ../shared/corpus")
    p.add_argument(
        "--questions", type=Path, default=None, help="default: bench/eval/questions.jsonl"
    )
    p.add_argument("--json", type=Path, default=Path(".docindex/eval.json"))
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated search modes")
    p.add_argument(
        "--baseline-only", action="store_true", help="BM25 only: no service (seconds, not minutes)"
    )
    p.add_argument(
        "--embed-model",
        default=None,
        help="the API's DOCINDEX_EMBED_MODEL (e.g. multilingual-e5-small); default: bundled",
    )
    return p.parse_args(argv)


async def measure_service(
    corpus: Path,
    files: Sequence[str],
    questions: Sequence[Question],
    modes: Sequence[str],
    embed_model: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Index the corpus on a throwaway stack and ask every question in each mode."""
    from bench.stack import Stack

    console = Console()
    documents = [(Path(f).name, (corpus / f).read_bytes()) for f in files]
    methods: dict[str, Any] = {}
    async with Stack() as stack:
        api_env = {"DOCINDEX_EMBED_MODEL": embed_model} if embed_model else None
        url, headers, by_id, indexing = await index_corpus(
            stack, files, documents, console, api_env
        )
        async with httpx.AsyncClient(base_url=url) as http:
            answers = await service_rankings(http, headers, by_id, questions, modes, console)
    for mode, ranked in answers.items():
        if isinstance(ranked, str):
            methods[mode] = ranked
        else:
            summary, per_question = evaluate(questions, ranked)
            methods[mode] = {"summary": summary, "per_question": per_question}
    return methods, indexing


def run(args: argparse.Namespace, console: Console) -> int:
    corpus: Path = args.corpus or default_corpus()
    if not corpus.is_dir():
        console.print(
            f"[yellow]corpus not found at {corpus}[/yellow] (use --corpus or DOCINDEX_CORPUS):"
            " the evaluation needs ../shared/corpus, skipped"
        )
        return 0
    questions = load_questions(args.questions) if args.questions else load_questions()
    problems = validate_all(questions, corpus)
    if problems:
        console.print("[red]the question set no longer holds against the corpus:[/red]")
        for problem in problems:
            console.print(f"  {problem}")
        return 1
    files = [str(p.relative_to(corpus)) for p in corpus_files(corpus)]
    console.print(f"{len(questions)} questions checked against {corpus}; {len(files)} documents")

    methods: dict[str, Any] = {}
    indexing: dict[str, Any] | None = None
    if not args.baseline_only:
        modes = [m for m in args.modes.split(",") if m]
        methods, indexing = asyncio.run(
            measure_service(corpus, files, questions, modes, args.embed_model)
        )
    summary, per_question = evaluate(questions, baseline_rankings(corpus, files, questions))
    methods[BASELINE] = {"summary": summary, "per_question": per_question}

    render(console, methods)
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "corpus": str(corpus),
        "questions": len(questions),
        "documents": len(files),
        "indexing": indexing,
        "methods": methods,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"JSON written to {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv), Console())


if __name__ == "__main__":
    sys.exit(main())
