"""``docindex runs list`` and ``docindex documents list``: a tenant's runs and documents,
newest first, read page after page through the API's cursors."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from docindex.api_models import PAGE_LIMIT_MAX

from . import main as cli

runs = typer.Typer(help="This tenant's indexing runs.", no_args_is_help=True)
documents = typer.Typer(help="This tenant's documents.", no_args_is_help=True)

Limit = Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many")]
All = Annotated[bool, typer.Option("--all", help="Show every one, page after page")]


def _page_size(limit: int, all_: bool) -> int:
    return PAGE_LIMIT_MAX if all_ else min(limit, PAGE_LIMIT_MAX)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


@runs.command("list")
def list_runs(
    status: Annotated[str | None, typer.Option(help="Only runs in this state")] = None,
    limit: Limit = 20,
    all_: All = False,
) -> None:
    """Runs, newest first, as recorded (`docindex status RUN` has live progress)."""
    table = Table("run", "status", "documents", "completed", "failed", "cancelled", "created")
    with cli._client() as api, cli._api_errors():
        rows = api.iter_runs(status=status, page_size=_page_size(limit, all_))
        for r in rows if all_ else itertools.islice(rows, limit):
            table.add_row(
                r.run_id,
                str(r.status),
                str(r.document_count),
                str(r.completed),
                str(r.failed),
                str(r.cancelled),
                _when(r.created_at),
            )
    cli.console.print(table)


@documents.command("list")
def list_documents(
    status: Annotated[str | None, typer.Option(help="Only documents in this state")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run's documents")] = None,
    filename: Annotated[
        str | None, typer.Option(help="Only file names matching this glob (*, ?, [abc])")
    ] = None,
    created_after: Annotated[
        datetime | None,
        typer.Option(
            "--created-after",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
            help="Only documents uploaded after this time (local time without a zone)",
        ),
    ] = None,
    limit: Limit = 20,
    all_: All = False,
) -> None:
    """Documents, newest first, as recorded (`docindex status RUN` has live progress)."""
    if created_after is not None and created_after.tzinfo is None:
        created_after = created_after.astimezone()  # the API needs a zone: the local one
    table = Table("document", "file", "status", "pages", "chunks", "run", "created", "error")
    with cli._client() as api, cli._api_errors():
        rows = api.iter_documents(
            status=status,
            run_id=run,
            filename=filename,
            created_after=created_after,
            page_size=_page_size(limit, all_),
        )
        for d in rows if all_ else itertools.islice(rows, limit):
            table.add_row(
                d.document_id,
                d.filename,
                str(d.status),
                str(d.pages or ""),
                str(d.chunk_count or ""),
                d.run_id,
                _when(d.created_at),
                f"{d.error_type}: {d.error}" if d.error_type else "",
            )
    cli.console.print(table)
