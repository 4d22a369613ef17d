"""``docindex gc``: free stored blobs that nothing references any more (``docindex.gc``),
as the ``docindex-gc`` schedule does; ``--dry-run`` only says what would go."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from . import main as cli


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be freed; delete nothing")
    ] = False,
    tenant: Annotated[str | None, typer.Option("--tenant", help="Only this tenant's blobs")] = None,
    grace_s: Annotated[
        float | None,
        typer.Option(
            "--grace-s",
            min=0,
            help="Spare objects younger than this (default DOCINDEX_GC_GRACE_S)",
        ),
    ] = None,
) -> None:
    """Free the blobs (uploads, step artifacts, PDF passwords) no document references:
    counts and bytes per tenant."""
    from docindex import gc as collector
    from docindex.blobstore import BlobStore
    from docindex.database import create_pool

    settings = cli.get_settings()
    grace = timedelta(seconds=settings.gc_grace_s if grace_s is None else grace_s)

    async def sweep() -> collector.GcReport:
        pool = await create_pool(cli.database_url(settings), max_size=2)
        try:
            return await collector.collect(
                pool,
                BlobStore.from_settings(settings),
                grace=grace,
                dry_run=dry_run,
                tenant=tenant,
            )
        finally:
            await pool.close()

    report = asyncio.run(sweep())
    verb = "would free" if dry_run else "freed"
    table = Table(title=f"docindex gc ({verb}; objects younger than {grace} spared)")
    for col in ("tenant", "objects", "bytes"):
        table.add_column(col, justify="left" if col == "tenant" else "right")
    for name, found in sorted(report.tenants.items()):
        table.add_row(name, str(found.objects), str(found.bytes))
    table.add_row("total", str(report.objects), str(report.bytes), style="bold")
    cli.console.print(table)
    cli.console.print(
        f"{report.scanned} objects looked at, {report.young} too young to judge"
        + (f", {report.passwords_released} PDF passwords released" if not dry_run else "")
    )
