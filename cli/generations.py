"""``docindex generations``: build, watch, compare and promote index generations."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from . import main as cli

if TYPE_CHECKING:
    from docindex.api_models import GenerationDetail
    from docindex.client import Client

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
    parts = {
        "chunker": _part(chunker, "--chunker"),
        "embedder": _part(embedder, "--embedder"),
        "enricher": _part(enricher, "--enricher"),
    }
    with cli._client() as api, cli._api_errors():
        accepted = api.create_generation(**parts)
        cli.console.print(f"generation [bold]{accepted.generation_id}[/bold] building")
        if wait:
            _follow(api, accepted.generation_id)


def _follow(api: Client, generation_id: str) -> GenerationDetail:
    while True:
        row = api.get_generation(generation_id)
        cli.console.print(
            f"{row.status}: {row.documents_done}/{row.documents_total} documents, "
            f"{row.documents_failed} failed, {row.chunk_count} chunks"
        )
        if row.status != "building":
            return row
        time.sleep(2.0)


@generations.command("list")
def list_() -> None:
    """This tenant's generations, newest first."""
    with cli._client() as api, cli._api_errors():
        rows = api.list_generations()
    table = Table("generation", "status", "documents", "chunks", "embedder", "chunker", "cost $")
    for r in rows:
        p = r.pipeline
        table.add_row(
            r.generation_id,
            str(r.status),
            f"{r.documents_done}/{r.documents_total}"
            + (f" ({r.documents_failed} failed)" if r.documents_failed else ""),
            str(r.chunk_count),
            f"{p['embedder']['kind']}:{p['embedder'].get('model', '')}",
            f"{p['chunker']['kind']}:{p['chunker'].get('max_tokens', '')}",
            f"{r.cost_usd:.4f}",
        )
    cli.console.print(table)


@generations.command("status")
def status(
    generation_id: str,
    wait: Annotated[bool, typer.Option(help="follow the build until it ends")] = False,
) -> None:
    """One generation's progress."""
    with cli._client() as api, cli._api_errors():
        if wait:
            _follow(api, generation_id)
        else:
            cli.console.print_json(api.get_generation(generation_id).model_dump_json())


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
    with cli._client() as api, cli._api_errors():
        result = api.promote_generation(
            generation_id, eval_set=eval_set, min_recall_at_5=min_recall
        )
    previous = result.previous_generation_id
    cli.console.print(
        f"[bold]{result.generation_id}[/bold] is active"
        + (f"; {previous} retired (promote it to roll back)" if previous else "")
    )
    if result.evaluation:
        e = result.evaluation
        cli.console.print(
            f"recall@5 on {e.eval_set}: {e.candidate_recall_at_5:.3f} "
            f"(active was {e.active_recall_at_5})"
        )
