"""The local model's GPU path (next batches tokenized in threads while the current one runs,
the Rust tokenizer called directly), run here on the CPU: it must give the vectors and token
counts sentence-transformers' own ``encode`` gives."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from docindex.config import Settings
from docindex.pipeline.embedders import gpu_worker_concurrency
from docindex.pipeline.embedders.local import LocalEmbedder, default_micro_batch

TEXTS = [
    "",
    "The cat sat on the mat.",
    "Quarterly revenue grew 8 % on strong demand for widgets in Europe and Asia.",
    "Ünïcödé façade — naïve café, 東京 and Ελληνικά 🙂",
    " ".join(f"sentence {i} of a chunk longer than the model reads" for i in range(120)),
    "a",
    "x" * 300,
    "pgvector stores embeddings next to the rows they describe.",
    "   ",
    "Temporal retries the activity; the workflow keeps its state.",
]


@pytest.fixture(scope="module")
def plain() -> LocalEmbedder:
    return LocalEmbedder(device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def overlapped() -> LocalEmbedder:
    return LocalEmbedder(device="cpu", batch_size=3, overlap=True, tokenize_threads=3)


def test_overlapped_batches_give_what_sentence_transformers_gives(
    plain: LocalEmbedder, overlapped: LocalEmbedder
):
    assert overlapped.overlap and overlapped._direct is not None  # the bundled model's path
    expected = plain._model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    tokenizer = plain._model.tokenizer
    counts = [
        len(tokenizer(t, truncation=True, max_length=plain._model.max_seq_length)["input_ids"])
        for t in TEXTS
    ]
    for embedder in (plain, overlapped):
        vectors, tokens = embedder.encode_counted(TEXTS)
        assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
        assert np.allclose(vectors, expected, atol=1e-5)
        assert tokens.tolist() == counts
    assert max(counts) == plain._model.max_seq_length  # the long text was cut where it reads
    empty_vectors, empty_tokens = overlapped.encode_counted([])
    assert empty_vectors.shape == (0, 384) and empty_tokens.shape == (0,)


async def test_concurrent_requests_each_get_their_own_rows_and_tokens(
    overlapped: LocalEmbedder,
):
    docs = [TEXTS[i : i + 3] for i in range(0, len(TEXTS), 2)]
    alone = [overlapped.encode_counted(d) for d in docs]
    passes = overlapped.batcher.stats.forward_passes
    together = await asyncio.gather(*(overlapped.embed_documents(d) for d in docs))
    assert overlapped.batcher.stats.forward_passes - passes < len(docs)
    for mine, (vectors, tokens) in zip(together, alone, strict=True):
        assert np.allclose(mine.vectors, vectors, atol=1e-5)
        assert mine.tokens == int(tokens.sum())


def test_a_model_with_a_default_prompt_keeps_it(plain: LocalEmbedder, tmp_path: Path):
    """The overlapped path does not add prompts: a model that has one embeds through
    sentence-transformers' encode, which does, whatever was asked."""
    plain._model.prompts = {"document": "passage: "}
    plain._model.default_prompt_name = "document"
    try:
        plain._model.save(str(tmp_path / "prompted"))
    finally:
        plain._model.prompts, plain._model.default_prompt_name = {}, None
    prompted = LocalEmbedder(tmp_path / "prompted", device="cpu", overlap=True)
    assert not prompted.overlap
    with_prompt = plain._model.encode(
        ["passage: " + t for t in TEXTS[1:4]], normalize_embeddings=True
    )
    assert np.allclose(prompted.encode(TEXTS[1:4]), with_prompt, atol=1e-5)
    assert not np.allclose(plain.encode(TEXTS[1:4]), with_prompt, atol=1e-3)


def test_defaults_follow_the_device():
    assert gpu_worker_concurrency(Settings(embed_device="cpu")) == 4
    assert gpu_worker_concurrency(Settings(embed_device="cuda")) == 128
    assert gpu_worker_concurrency(Settings(embed_device="cuda", gpu_worker_concurrency=8)) == 8
    assert default_micro_batch("cpu") == 256 and default_micro_batch("cuda") == 1024


def _rows(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in model: each text's vector is its length, its tokens its word count."""
    vectors = np.array([[float(len(t))] for t in texts], dtype=np.float32)
    return vectors, np.array([len(t.split()) for t in texts], dtype=np.int64)


async def test_two_passes_run_at_once_and_each_caller_gets_its_rows():
    import threading

    from docindex.pipeline.embedders.local import MicroBatcher

    both = threading.Barrier(2, timeout=10)  # broken unless two passes meet inside encode

    def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        both.wait()
        return _rows(texts)

    batcher = MicroBatcher(encode, max_batch=2, max_wait_s=0.0, in_flight=2)
    requests = [["a b", "ccc"], ["dddd e f", "m"], ["gg", "h"], ["i j k l", "n o"]]  # 4 passes
    results = await asyncio.gather(*(batcher.embed(r) for r in requests))
    for request, (vectors, tokens) in zip(requests, results, strict=True):
        assert vectors[:, 0].tolist() == [len(t) for t in request]
        assert tokens.tolist() == [len(t.split()) for t in request]
    assert batcher.stats.forward_passes == 4


async def test_a_failed_pass_fails_its_callers_and_the_batcher_goes_on():
    from docindex.pipeline.embedders.local import MicroBatcher

    def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if "boom" in texts:
            raise RuntimeError("CUDA out of memory")
        return _rows(texts)

    batcher = MicroBatcher(encode, max_batch=1, max_wait_s=0.0, in_flight=2)
    with pytest.raises(RuntimeError, match="out of memory"):
        await batcher.embed(["boom"])
    vectors, _ = await batcher.embed(["after"])
    assert vectors[:, 0].tolist() == [5.0]
