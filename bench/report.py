"""``python -m bench.report [.docindex/bench.json]``: the results as Markdown (the tables of
docs/benchmarks.md), so the document is pasted from the JSON, never retyped."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.run import EXTRA, FIGURES


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Run {result['started_at']} → {result.get('finished_at', '?')}, "
        f"{'quick' if result['quick'] else 'full'}, repeat {result['repeat']}, "
        f"parallel {result['parallel']}.",
        "",
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, GPU: {m.get('gpu')}, Python {m.get('python')}, "
        f"torch {m.get('torch', '?')}, {m.get('platform')}.",
        "",
        f"Command: `{result['command']}` on commit {result.get('commit', '?')}; load average "
        f"(1/5/15 min) {result.get('load_at_start', '?')} at the start, "
        f"{result.get('load_at_end', '?')} at the end.",
        "",
        "| figure | measure | value | goal |",
        "|---|---|---|---|",
    ]
    for name, figure in result["figures"].items():
        label = FIGURES.get(name) or EXTRA.get(name, name)
        if figure.get("error"):
            lines.append(f"| {label} | error | {figure['error'][:100]} | |")
        for i, (measure, value, goal) in enumerate(figure.get("rows", [])):
            lines.append(f"| {label if i == 0 else ''} | {measure} | {value} | {goal} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else ".docindex/bench.json")
    print(markdown(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
