"""The load script of issue #6 (a report, not a timed test): 50 concurrent uploads of ~1 MB
files, then one run of 500 documents, against a stack with the API's default limits.

Prints upload latency p50/p95/p99, errors (expected 0), documents per minute, and whether
every accepted document reached a terminal state. ``make load`` or
``python -m bench.load [--quick]``; the exit status is 1 if there were errors or a document
did not finish."""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

import httpx

from bench.common import UploadRefused, gather_limited, load_run_files, pct, synthetic_pdf, upload
from bench.context import Ctx
from docindex.config import Settings

CONCURRENT = 50
SIZE = 1024 * 1024
RUN_DOCUMENTS = 500
# The production defaults, so the load meets the limits a real client would.
DEFAULT_LIMITS = {
    f"DOCINDEX_{name.upper()}": str(Settings.model_fields[name].default)
    for name in ("rate_limit", "tenant_max_active_runs", "max_files_per_request")
    if name in Settings.model_fields
}


async def measure(ctx: Ctx) -> dict[str, Any]:
    concurrent = 10 if ctx.quick else CONCURRENT
    run_docs = 50 if ctx.quick else RUN_DOCUMENTS
    await ctx.service()
    url = await ctx.api(**DEFAULT_LIMITS)
    headers = await ctx.stack.api_headers(f"load-{uuid.uuid4().hex[:6]}")
    seed = 900_000 + uuid.uuid4().int % 10**6 * 1000
    latencies: list[float] = []
    errors: dict[str, int] = {}
    accepted: list[str] = []

    async def one(http: httpx.AsyncClient, files: list[tuple[str, bytes]]) -> None:
        started = time.perf_counter()
        try:
            body = await upload(http, files, headers, timeout_s=300)
        except UploadRefused as exc:
            errors[str(exc.status)] = errors.get(str(exc.status), 0) + 1
            return
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        latencies.append(time.perf_counter() - started)
        accepted.extend(d["document_id"] for d in body["documents"] if not d.get("duplicate"))

    big = [[(f"big-{i}.pdf", synthetic_pdf(seed + i, SIZE))] for i in range(concurrent)]
    many = load_run_files(seed + 10_000, run_docs)
    limits = httpx.Limits(max_connections=concurrent)
    phases: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        started = time.perf_counter()
        await gather_limited(concurrent, [one(http, f) for f in big])
        upload_s = time.perf_counter() - started
        status = await ctx.stack.wait_documents(list(accepted), timeout_s=3600, every_s=0.5)
        phases["uploads"] = {
            "documents": len(status),
            "upload_s": upload_s,
            "done_s": time.perf_counter() - started,
        }
        # After the first phase has drained: the tenant may have 50 active runs at a time.
        first = len(accepted)
        started = time.perf_counter()
        await one(http, many)
        status.update(await ctx.stack.wait_documents(accepted[first:], timeout_s=3600, every_s=0.5))
        phases["run"] = {
            "documents": len(accepted) - first,
            "done_s": time.perf_counter() - started,
        }
    total_s = phases["uploads"]["done_s"] + phases["run"]["done_s"]
    terminal = sum(
        s in ("completed", "failed", "cancelled", "quarantined") for s in status.values()
    )
    by_status: dict[str, int] = {}
    for s in status.values():
        by_status[s] = by_status.get(s, 0) + 1
    per_min = len(status) / total_s * 60
    p50, p95, p99 = (pct(latencies, q) * 1000 for q in (50, 95, 99))
    n_errors = sum(errors.values())
    return {
        "concurrent_uploads": concurrent,
        "upload_bytes": SIZE,
        "run_documents": run_docs,
        "upload_p50_ms": p50,
        "upload_p95_ms": p95,
        "upload_p99_ms": p99,
        "errors": n_errors,
        "error_kinds": errors,
        "accepted_documents": len(accepted),
        "terminal_documents": terminal,
        "statuses": by_status,
        "all_terminal": terminal == len(accepted),
        "documents_per_minute": per_min,
        "phases": phases,
        "ok": n_errors == 0 and terminal == len(accepted) == concurrent + run_docs,
        "rows": [
            (
                f"{concurrent} concurrent 1 MB uploads p50/p95/p99",
                f"{p50:.0f}/{p95:.0f}/{p99:.0f} ms",
                "",
            ),
            ("errors", f"{n_errors} {errors or ''}", "0"),
            ("documents per minute", f"{per_min:.0f}", ""),
            (
                "accepted documents terminal",
                f"{terminal}/{len(accepted)} {by_status}",
                "all",
            ),
        ],
    }


def main() -> int:
    from bench.run import main as run_main

    args = [a for a in sys.argv[1:]]
    if "--json" not in args:
        args += ["--json", ".docindex/load.json"]
    code = run_main(["--only", "load", "--repeat", "1", *args])
    return code


if __name__ == "__main__":
    sys.exit(main())
