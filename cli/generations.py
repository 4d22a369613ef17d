"""``docindex generations``: build, watch, compare and promote index generations."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from . import main as cli

generations = typer.Typer(
    help="Index generations: re-derive every document with a new chunker, embedder or "
    "enricher, then promote it (search switches at once; promoting the old one rolls back).",
    no_args_is_help=True,
)


def _part(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{name} must be JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise typer.BadParameter(f"{name} must be a JSON object")
    return value


@generations.command("create")
def create(
    chunker: Annotated[
        str | None, typer.Option(help='JSON, e.g. {"kind": "hybrid", "max_tokens": 128}')
    ] = None,
    embedder: Annotated[
        str | None, typer.Option(help='JSON, e.g. {"kind": "voyage", "model": "voyage-3.5"}')
    ] = None,
    enricher: Annotated[str | None, typer.Option(help='JSON, e.g. {"kind": "none"}')] = None,
    wait: Annotated[bool, typer.Option(help="follow the build until it ends")] = False,
) -> None:
    """Start building a generation; omitted parts are the active generation's."""
    body = {
        k: v
        for k, v in {
            "chunker": _part(chunker, "--chunker"),
            "embedder": _part(embedder, "--embedder"),
            "enricher": _part(enricher, "--enricher"),
        }.items()
        if v is not None
    }
    with cli._api() as http:
        accepted = cli._check(http.post("/v1/generations", json=body))
        cli.console.print(f"generation [bold]{accepted['generation_id']}[/bold] building")
        if wait:
            _follow(http, accepted["generation_id"])


def _follow(http: Any, generation_id: str) -> dict[str, Any]:
    while True:
        row = cli._check(http.get(f"/v1/generations/{generation_id}"))
        cli.console.print(
            f"{row['status']}: {row['documents_done']}/{row['documents_total']} documents, "
            f"{row['documents_failed']} failed, {row['chunk_count']} chunks"
        )
        if row["status"] != "building":
            return row
        time.sleep(2.0)


@generations.command("list")
def list_() -> None:
    """This tenant's generations, newest first."""
    with cli._api() as http:
        rows = cli._check(http.get("/v1/generations"))["generations"]
    table = Table("generation", "status", "documents", "chunks", "embedder", "chunker", "cost $")
    for r in rows:
        p = r["pipeline"]
        table.add_row(
            r["generation_id"],
            r["status"],
            f"{r['documents_done']}/{r['documents_total']}"
            + (f" ({r['documents_failed']} failed)" if r["documents_failed"] else ""),
            str(r["chunk_count"]),
            f"{p['embedder']['kind']}:{p['embedder'].get('model', '')}",
            f"{p['chunker']['kind']}:{p['chunker'].get('max_tokens', '')}",
            f"{r['cost_usd']:.4f}",
        )
    cli.console.print(table)


@generations.command("status")
def status(
    generation_id: str,
    wait: Annotated[bool, typer.Option(help="follow the build until it ends")] = False,
) -> None:
    """One generation's progress."""
    with cli._api() as http:
        if wait:
            _follow(http, generation_id)
        else:
            cli.console.print_json(
                json.dumps(cli._check(http.get(f"/v1/generations/{generation_id}")))
            )


@generations.command("promote")
def promote(
    generation_id: str,
    eval_set: Annotated[
        str | None, typer.Option(help="run this eval set on both generations first")
    ] = None,
    min_recall: Annotated[
        float, typer.Option("--min-recall-at-5", help="refuse below this recall@5")
    ] = 0.0,
) -> None:
    """Make a generation the one search serves (refused when it scores worse)."""
    body = {"require": {"eval_set": eval_set, "min_recall_at_5": min_recall}} if eval_set else {}
    with cli._api() as http:
        response = http.post(f"/v1/generations/{generation_id}/promote", json=body)
        result = cli._check(response)
    previous = result["previous_generation_id"]
    cli.console.print(
        f"[bold]{result['generation_id']}[/bold] is active"
        + (f"; {previous} retired (promote it to roll back)" if previous else "")
    )
    if result.get("evaluation"):
        e = result["evaluation"]
        cli.console.print(
            f"recall@5 on {e['eval_set']}: {e['candidate_recall_at_5']:.3f} "
            f"(active was {e['active_recall_at_5']})"
        )
