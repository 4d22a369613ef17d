"""``docindex sources``: add, list, inspect, sync and remove sources that sync themselves."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from . import main as cli

sources = typer.Typer(
    help="Sources that sync themselves: a prefix of an S3 bucket (s3://bucket/prefix/) or a "
    "folder under the server's allowed root (file:///path/), indexed as objects appear, "
    "change and go.",
    no_args_is_help=True,
)


def _row(table: Table, s: dict[str, Any]) -> None:
    table.add_row(
        s["source_id"],
        s["url"],
        s["status"],
        s["synced_as_of"] or "-",
        str(s["objects"]),
        str(s["indexed"]),
        str(s["pending"]),
        str(s["failed"]),
        s["last_error"] or "",
    )


def _table(found: list[dict[str, Any]]) -> None:
    table = Table()
    for col in ("source", "url", "status", "synced as of", "objects", "indexed", "pending"):
        table.add_column(col)
    table.add_column("failed")
    table.add_column("last error")
    for s in found:
        _row(table, s)
    cli.console.print(table)


@sources.command("add")
def add(
    url: Annotated[str, typer.Argument(help="s3://bucket/prefix/ or file:///folder/")],
    interval: Annotated[float, typer.Option(help="seconds between syncs")] = 300.0,
    include: Annotated[
        list[str] | None, typer.Option(help="glob of keys to index, e.g. '*.pdf' (repeatable)")
    ] = None,
) -> None:
    """Add a source; its first sync starts at once."""
    body = {"url": url, "interval_s": interval, "include": include or []}
    with cli._api() as http:
        created = cli._check(http.post("/v1/sources", json=body))
    cli.console.print(f"source [bold]{created['source_id']}[/bold] added, syncing")


@sources.command("list")
def list_sources() -> None:
    """The tenant's sources and where each stands."""
    with cli._api() as http:
        _table(cli._check(http.get("/v1/sources"))["sources"])


@sources.command("status")
def status(source_id: str) -> None:
    """One source: synced as of when, and its objects indexed, pending and failed."""
    with cli._api() as http:
        _table([cli._check(http.get(f"/v1/sources/{source_id}"))])


@sources.command("sync")
def sync(source_id: str) -> None:
    """Sync now rather than at the next interval."""
    with cli._api() as http:
        cli._check(http.post(f"/v1/sources/{source_id}/sync"))
    cli.console.print(f"source {source_id} syncing")


@sources.command("remove")
def remove(
    source_id: str,
    purge: Annotated[bool, typer.Option(help="delete its documents too")] = False,
) -> None:
    """Stop syncing a source; its documents stay unless --purge."""
    with cli._api() as http:
        cli._check(http.delete(f"/v1/sources/{source_id}", params={"purge": purge}))
    cli.console.print(f"source {source_id} " + ("stopped, purging" if purge else "stopped"))
