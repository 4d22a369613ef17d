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
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from docindex.config import get_settings

app = typer.Typer(help="Durable document indexing for RAG, on Temporal.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

TERMINAL_RUN = {"completed", "completed_with_errors", "failed", "cancelled", "terminated"}
TERMINAL_DOC = {"completed", "failed", "cancelled"}
STEPS = ["parse", "metadata", "chunk", "enrich", "embed", "store"]


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _api(timeout: float = 60.0) -> httpx.Client:
    return httpx.Client(base_url=get_settings().resolved_api_url, timeout=timeout)


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        err.print(f"[red]{response.status_code}[/red] {response.text}")
        raise typer.Exit(1)
    return response.json()


@app.command()
def dev() -> None:
    """Start Temporal (+UI), Postgres, the three workers and the API, supervised."""
    from docindex.devstack import DevStack

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
    queue: Annotated[str, typer.Option(help="workflow | cpu | gpu | hosted")],
) -> None:
    """Run one worker polling one task queue."""
    from workers.factory import Queue
    from workers.main import run_worker

    _logging()
    try:
        kind = Queue(queue)
    except ValueError:
        raise typer.BadParameter("queue must be workflow, cpu, gpu or hosted") from None
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
        console.print(
            f"run [bold]{body['run_id']}[/bold]: {len(body['documents'])} documents "
            f"accepted ({body['status_url']})"
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
    for col in ("document", "status", "pages", "chunks", "error"):
        table.add_column(col)
    for d in run["documents"]:
        error = f"{d['error_type']}: {d['error']}" if d.get("error_type") else ""
        table.add_row(
            d["filename"],
            d["status"],
            str(d.get("pages") or ""),
            str(d.get("chunk_count") or ""),
            error,
        )
    console.print(table)
    console.print(
        f"completed {run['completed']} · failed {run['failed']} · "
        f"cancelled {run['cancelled']} of {run['document_count']}"
    )


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
) -> None:
    """Search the index."""
    with _api() as http:
        body = _check(http.post("/v1/search", json={"query": query, "top_k": top_k}))
    if not body["results"]:
        console.print("no results")
        return
    for i, hit in enumerate(body["results"], 1):
        pages = ",".join(map(str, hit["pages"])) or "-"
        console.print(f"[bold]{i}. {hit['filename']}[/bold]  p.{pages}  score {hit['score']:.3f}")
        console.print("   " + hit["text"][:300].replace("\n", " "))


def main() -> None:  # pragma: no cover
    sys.exit(app())
