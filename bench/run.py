"""``python -m bench`` / ``make bench`` / ``docindex bench``: run the figures, print a table,
write JSON (default ``.docindex/bench.json``).

Figures are medians of ``--repeat`` runs on this machine; a ratio is always measured side by
side in the same run. Nothing here asserts anything: it is a report.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import platform
import shlex
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import MissingInput, default_corpus
from bench.context import Ctx
from bench.stack import Stack
from docindex.config import Settings

# In the order they run: overhead first, its service runs also sample memory (figure 8).
FIGURES = {
    "overhead": "1. orchestration overhead",
    "latency": "2. 1-page PDF latency",
    "uploads": "3. upload API",
    "fanout": "4. fan-out",
    "parse": "5. parse",
    "embed": "6. embed",
    "search": "7. search",
    "memory": "8. peak memory",
    "tenants": "9. small tenants in a big index",
}
EXTRA = {"load": "load script (issue #6)"}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "gpu": "none",
    }
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        info["cpu_model"] = model
    except (OSError, StopIteration):
        pass
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated figures: " + ",".join([*FIGURES, *EXTRA]) + " (default: all 9)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure; medians reported")
    ap.add_argument("--quick", action="store_true", help="small numbers: a few minutes in all")
    ap.add_argument(
        "--parallel",
        type=int,
        default=min(os.cpu_count() or 2, 4),
        help="CPU slots: the CPU worker's concurrency, and documents parsing at once in-process",
    )
    ap.add_argument(
        "--window",
        type=int,
        default=Settings.model_fields["max_concurrent_documents"].default,
        help="documents in flight in figure 1, on both sides (default: a run's window)",
    )
    ap.add_argument(
        "--index-chunks",
        type=int,
        default=1_000_000,
        help="figure 9: chunks of every tenant in the index (default 1,000,000)",
    )
    ap.add_argument(
        "--index-dim", type=int, default=384, help="figure 9: their dimension (default 384)"
    )
    ap.add_argument(
        "--big",
        action="store_true",
        help="figure 1 on big PDFs (over 200 pages, made of the corpus's PDFs): page ranges",
    )
    ap.add_argument(
        "--anchor-processes",
        type=_ints,
        default=tuple(range(1, (os.cpu_count() or 2) + 1)),
        help="figure 1: worker processes the anchor tries (default 1..cores), e.g. 1,2,3",
    )
    ap.add_argument(
        "--anchor-batch",
        type=_ints,
        default=(64, 256),
        help="figure 1: texts per embedding batch the anchor tries (default 64,256)",
    )
    ap.add_argument(
        "--anchor-threads",
        type=_ints,
        default=tuple(sorted({max(1, (os.cpu_count() or 2) - 1), os.cpu_count() or 2})),
        help="figure 1: torch threads the anchor's embedding tries (default: the service's "
        "default, one fewer than the cores, and one per core)",
    )
    ap.add_argument(
        "--fanout-documents",
        type=int,
        default=None,
        help="figure 4: tiny documents in the run (default 2,000; 200 with --quick)",
    )
    ap.add_argument("--corpus", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=Path(".docindex/bench.json"))
    return ap.parse_args(argv)


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES and n not in EXTRA]
    if unknown:
        raise SystemExit(f"unknown figures: {', '.join(unknown)}")
    order = [n for n in [*FIGURES, *EXTRA] if n in names]
    result: dict[str, Any] = {
        "command": "python -m bench " + shlex.join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "repeat": args.repeat,
        "parallel": args.parallel,
        "window": args.window,
        "commit": _commit(),
        "load_at_start": _load(),
        "figures": {},
    }
    corpus = (args.corpus or default_corpus()).resolve()
    if not corpus.is_dir():
        console.print(
            f"[yellow]corpus not found at {corpus}[/yellow] (use --corpus or DOCINDEX_CORPUS):"
            " the figures that read it are skipped"
        )
    async with Stack() as stack:
        ctx = Ctx(
            stack=stack,
            corpus=corpus,
            quick=args.quick,
            repeat=args.repeat,
            parallel=args.parallel,
            window=args.window,
            console=console,
            index_chunks=args.index_chunks,
            index_dim=args.index_dim,
            big=args.big,
            fanout_documents=args.fanout_documents,
            anchor_processes=args.anchor_processes,
            anchor_batches=args.anchor_batch,
            anchor_threads=args.anchor_threads,
        )
        for name in order:
            console.print(f"[bold]{FIGURES.get(name) or EXTRA[name]}[/bold] …")
            started = time.perf_counter()
            module = importlib.import_module(f"bench.{name}")
            try:
                figure = await module.measure(ctx)
            except MissingInput as exc:  # not in this corpus: skipped, not failed
                console.print(f"  [yellow]skipped: {exc}[/yellow]")
                figure = {"skipped": str(exc), "rows": []}
            except Exception as exc:  # one broken figure must not lose the others
                console.print_exception()
                figure = {"error": f"{type(exc).__name__}: {exc}", "rows": []}
            figure["seconds"] = round(time.perf_counter() - started, 1)
            result["figures"][name] = figure
            console.print(f"  done in {figure['seconds']} s")
            # Written after every figure, so an interrupted run keeps what it measured.
            write(args.json, result)
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["load_at_end"] = _load()
    return result


def table(result: dict[str, Any]) -> Table:
    t = Table(title=f"docindex bench ({'quick' if result['quick'] else 'full'})")
    for col in ("figure", "measure", "value", "goal"):
        t.add_column(col)
    for name, figure in result["figures"].items():
        label = FIGURES.get(name) or EXTRA.get(name, name)
        if figure.get("error"):
            t.add_row(label, "error", figure["error"][:80], "")
        if figure.get("skipped"):
            t.add_row(label, "skipped", figure["skipped"][:80], "")
        for i, (measure, value, goal) in enumerate(figure.get("rows", [])):
            t.add_row(label if i == 0 else "", measure, value, goal)
    return t


def _clean(obj: Any) -> Any:
    """JSON has no NaN; write null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def _commit() -> str:
    """The checkout measured: HEAD, and whether files differ from it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}" or "unknown"


def _load() -> list[float]:
    """The load average (1, 5, 15 minutes): what else this machine was doing."""
    return [round(x, 2) for x in os.getloadavg()]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(result), indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    console = Console()
    # SIGTERM (timeout, CI) unwinds like Ctrl-C, so the stack's processes and temporary
    # database are stopped and removed instead of left behind.
    signal.signal(signal.SIGTERM, _interrupt)
    result = asyncio.run(run(args, console))
    console.print(table(result))
    write(args.json, result)
    console.print(f"written to {args.json}")
    # A report, but a figure that broke or a check that failed (load: errors, unfinished
    # documents) makes the exit status say so.
    failed = any(f.get("error") or f.get("ok") is False for f in result["figures"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
