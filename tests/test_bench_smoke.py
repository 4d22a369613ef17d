"""The benchmark harness and ``index-local`` work (outcomes only: no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cli.local_index import LocalIndexer
from docindex import repository
from docindex.config import Settings
from docindex.database import create_pool

from .helpers import unique

ROOT = Path(__file__).resolve().parents[1]


async def test_index_local_makes_a_document_searchable(
    settings: Settings, corpus: Path, tmp_path: Path
) -> None:
    source = tmp_path / "multi_page.pdf"
    source.write_bytes(unique((corpus / "pdf/docling/multi_page.pdf").read_bytes()))
    pool = await create_pool(settings.database_url or "", max_size=2)
    try:
        indexer = LocalIndexer(settings, pool)
        run = await indexer.index([source])
        [doc] = run.documents
        assert doc.status == "completed", doc.error
        assert doc.pages == 5 and doc.chunks > 0
        assert {"prepare", "embed", "store"} <= doc.seconds.keys()

        stored = await repository.get_run(pool, run.run_id)
        assert stored is not None and stored.status == "completed"
        count = await pool.fetchval(
            "SELECT count(*) FROM chunks WHERE document_id = $1::uuid", doc.document_id
        )
        assert count == doc.chunks

        query = await indexer.embedder.embed_query("the evolution of the word processor")
        hits = await repository.search_chunks(pool, query, indexer.embedder.model, 20)
        assert doc.document_id in {h.document_id for h in hits}
    finally:
        await pool.close()


def _quick_bench(tmp_path: Path, figure: str, timeout: int, *more: str) -> dict:
    """``python -m bench --quick`` of one figure, as a user runs it; its JSON report."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    argv = ["--quick", "--repeat", "1", "--only", figure, "--json", str(out), *more]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(180)
def test_bench_quick_writes_the_figures(tmp_path: Path) -> None:
    result = _quick_bench(tmp_path, "search", timeout=170)
    assert result["machine"]["cpus"] and result["command"].startswith("python -m bench")
    search = result["figures"]["search"]
    assert "error" not in search
    assert search["chunks"] == 10_000 and search["uses_hnsw"]
    assert 0.0 < search["recall_at_10"] <= 1.0
    assert search["p50_ms"] > 0 and search["p95_ms"] >= search["p50_ms"]


@pytest.mark.timeout(300)
def test_bench_latency_reads_each_samples_path(tmp_path: Path) -> None:
    """Figure 2 breaks each sample down from one clock: the client, Postgres and both
    workflows' histories, in the order things happened, ending when the bench saw the
    document completed, which is after its store step began."""
    # The figure's one-page PDF ships with the tests: a clone alone has no shared corpus.
    report = _quick_bench(tmp_path, "latency", 290, "--corpus", str(ROOT / "tests" / "data"))
    latency = report["figures"]["latency"]
    assert "error" not in latency and latency["samples"] == 5
    for path in latency["paths"]:
        names = [name for name, _ in path]
        at = dict(path)
        assert names[0] == "client sent"
        for point in (
            "run started",
            "doc started",
            "prepare_document run",
            "embed_chunks run",
            "event store running",
        ):
            assert point in at, names
        assert (
            at["client sent"]
            < at["API recorded the upload"]
            < at["run started"]
            < at["doc started"]
            < at["prepare_document run"]
            < at["embed_chunks run"]
            < at["event store running"]
            < at["bench saw it"]
        ), path
        seen = at["bench saw it"] - at["client sent"]
        assert latency["p50_s"] <= latency["max_s"] and 0 < seen <= latency["max_s"] + 0.05
    assert next(iter(latency["path_ms"])) == "API recorded the upload"
    assert {"embed", "prepare", "store"} <= latency["in_process_steps_ms"].keys()


@pytest.mark.timeout(120)
async def test_anchor_makes_what_the_naive_loop_makes(
    settings: Settings, corpus: Path, tmp_path: Path
) -> None:
    """Figure 1's anchor (bench/anchor.py): CPU steps in a worker process, embedding across
    documents here; the same documents, statuses and chunk counts as the plain loop."""
    from bench.anchor import Anchor, differences, outcomes

    paths = []
    for name in ("pdf/docling/multi_page.pdf", "office/docling/word_sample.docx"):
        paths.append(tmp_path / Path(name).name)
        paths[-1].write_bytes((corpus / name).read_bytes())
    pool = await create_pool(settings.database_url or "", max_size=2)
    anchor = Anchor(settings, pool)
    try:
        fast = await anchor.run(paths, f"anchor-{uuid.uuid4().hex[:8]}", processes=1, batch=64)
        plain = await anchor.naive(paths, f"naive-{uuid.uuid4().hex[:8]}")
        assert (fast.completed, fast.failed) == (plain.completed, plain.failed) == (2, 0)
        made = await outcomes(pool, fast.run_id)
        assert differences(made, await outcomes(pool, plain.run_id)) == []
        assert [d.filename for d in made[1]] == ["multi_page.pdf", "word_sample.docx"]
        assert all(d.status == "completed" and d.chunks > 0 for d in made[1])
        assert fast.workers_cpu_s > 0  # the parse ran in the worker process
    finally:
        anchor.close()
        await pool.close()
