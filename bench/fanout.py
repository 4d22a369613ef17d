"""Figure 4: one run of 2,000 tiny documents. Wall time, orchestration ms per document (the
service's wall time over the in-process time of the same documents, per document), and the
parent workflow's history per execution (continue-as-new must have happened, no execution
near Temporal's limits, no workflow task failures). Then a new index generation of the same
documents (a reindex with another chunker, from the parses they have): its wall time and
what its orchestration costs per document."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.common import cpu_seconds, tiny_markdown, upload
from bench.context import Ctx
from bench.history import Cost, execution_cost, executions
from docindex.blobstore import BlobStore
from docindex.ids import run_workflow_id
from docindex.runs import record_files
from workflows.starter import start_run

# Temporal's defaults: a workflow is terminated at 51,200 events or 50 MB of history, and
# warned from 10,240 events / 10 MB.
EVENT_WARN, SIZE_WARN = 10_240, 10 * 2**20
# DOCINDEX_MAX_FILES_PER_REQUEST's ceiling (Starlette's multipart parser stops at 1,000).
API_MAX_FILES = 1000
# Children whose histories are read for the cost of one document.
SAMPLED_CHILDREN = 20


async def measure(ctx: Ctx) -> dict[str, Any]:
    n = ctx.fanout_documents or (200 if ctx.quick else 2000)
    per_execution = 50 if n <= 200 else 200
    window = 8  # the default DOCINDEX_MAX_CONCURRENT_DOCUMENTS
    env = {
        "DOCINDEX_DOCUMENTS_PER_RUN_EXECUTION": str(per_execution),
        "DOCINDEX_MAX_CONCURRENT_DOCUMENTS": str(window),
    }
    await ctx.service()
    url = await ctx.api(**env)
    tenant = f"bench-fanout-{uuid.uuid4().hex[:6]}"
    headers = await ctx.stack.api_headers(tenant)
    seed0 = 500_000 + uuid.uuid4().int % 1_000_000 * 10_000
    files = [(f"note-{i:05d}.md", tiny_markdown(seed0 + i)) for i in range(n)]
    cpu_before = cpu_seconds(ctx.worker_pids(), ctx.stack.root)
    started = time.perf_counter()
    if n <= API_MAX_FILES:
        async with httpx.AsyncClient(base_url=url) as http:
            run_id = (await upload(http, files, headers))["run_id"]
    else:
        # More files than one request may carry: the run is created the way the API does
        # (blobs and rows, then the workflow), in one piece.
        run_id = await _create_directly(ctx, files, tenant, per_execution, window)
    upload_s = time.perf_counter() - started
    final = await ctx.stack.wait_run(run_id, timeout_s=3600)
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(ctx.worker_pids(), ctx.stack.root)
    # CPU milliseconds per document of each process over the run (steadier than wall time
    # on a shared machine): the Temporal server and the workflow worker are orchestration.
    cpu_ms = {k: (cpu_after[k] - cpu_before.get(k, 0.0)) / n * 1000 for k in cpu_after}
    counts = dict(
        await ctx.stack.pool.fetch(
            "SELECT status, count(*) FROM documents WHERE run_id = $1 GROUP BY status",
            uuid.UUID(run_id),
        )
    )
    chain = await executions(ctx.stack.client, run_workflow_id(run_id))
    child, children = await _child_cost(ctx, run_id, n)
    rebuild = await _generation(ctx, url, headers, tenant, n)

    # The same documents in one process, as many at a time as the run's window.
    indexer = await ctx.local()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in files:
            (Path(tmp) / name).write_bytes(data)
            paths.append(Path(tmp) / name)
        ctx.stack.forget_artifacts()
        local = await indexer.index(paths, parallel=window)
    orchestration_ms = (wall - local.wall_s) / n * 1000
    max_events = max(e.events for e in chain)
    max_size = max(e.size_bytes for e in chain)
    failures = sum(e.workflow_task_failures for e in chain)
    can_ok = len(chain) > 1 and all(e.closed_by.endswith("CONTINUED_AS_NEW") for e in chain[:-1])
    return {
        "documents": n,
        "documents_per_execution": per_execution,
        "window": window,
        "run_status": final,
        "statuses": counts,
        "upload_s": upload_s,
        "created_without_http": n > API_MAX_FILES,
        "wall_s": wall,
        "docs_per_s": n / wall,
        "in_process_wall_s": local.wall_s,
        "ratio": wall / local.wall_s,
        "orchestration_ms_per_doc": orchestration_ms,
        "executions": [e.__dict__ for e in chain],
        "continued_as_new": can_ok,
        "max_events_per_execution": max_events,
        "max_history_bytes": max_size,
        "workflow_task_failures": failures,
        "cpu_ms_per_doc": cpu_ms,
        "child_history_per_doc": child.__dict__,
        "children": children,
        "parent_events_per_doc": sum(e.events for e in chain) / n,
        "limit_errors": int(max_events > EVENT_WARN or max_size > SIZE_WARN or failures > 0),
        "generation": rebuild,
        "rows": [
            ("documents / executions", f"{n} / {len(chain)}", "continue-as-new"),
            ("wall (upload → run done)", f"{wall:.1f} s ({n / wall:.1f} docs/s)", ""),
            ("in-process, same docs", f"{local.wall_s:.1f} s", ""),
            ("orchestration per document", f"{orchestration_ms:.1f} ms", ""),
            (
                "parent history, max per execution",
                f"{max_events} events, {max_size / 1024:.0f} KiB",
                f"< {EVENT_WARN} events",
            ),
            (
                "CPU per document: Temporal server / workflow worker",
                f"{cpu_ms.get('temporal', 0):.1f} / {cpu_ms.get('workflow', 0):.1f} ms",
                "",
            ),
            (
                "children: " + ", ".join(f"{k} {v}" for k, v in sorted(children.items())),
                f"{sum(children.values()) / n:.3f} per document",
                "",
            ),
            (
                "children's history per document (sampled)",
                f"{child.events:.1f} events, {child.workflow_tasks:.2f} workflow tasks, "
                f"{child.upserts:.2f} upserts, {child.markers:.2f} markers, "
                f"{child.activities:.2f} activity tasks",
                "",
            ),
            ("parent events per document", f"{sum(e.events for e in chain) / n:.1f}", ""),
            (
                "limit errors / WFT failures",
                f"{int(max_events > EVENT_WARN or max_size > SIZE_WARN)} / {failures}",
                "0 / 0",
            ),
            *(
                [("created without HTTP", f"more than {API_MAX_FILES} files per request", "")]
                if n > API_MAX_FILES
                else []
            ),
            (
                "new generation of them: wall, documents done / failed",
                f"{rebuild['wall_s']:.1f} s, {rebuild['documents_done']} / "
                f"{rebuild['documents_failed']} ({rebuild['status']})",
                f"{n} / 0",
            ),
            (
                "new generation: CPU per document, server / workflow worker",
                f"{rebuild['cpu_ms_per_doc'].get('temporal', 0):.1f} / "
                f"{rebuild['cpu_ms_per_doc'].get('workflow', 0):.1f} ms",
                "≤ 20 ms together",
            ),
            (
                "new generation: children",
                ", ".join(f"{k} {v}" for k, v in sorted(rebuild["children"].items())),
                "",
            ),
        ],
    }


async def _generation(
    ctx: Ctx, url: str, headers: dict[str, str], tenant: str, documents: int
) -> dict[str, Any]:
    """Build a new generation of the tenant's documents with smaller chunks (a reindex from
    the parses they have) and wait until it is ready: wall, CPU per document of each
    process, and the children it started, by kind."""
    cpu_before = cpu_seconds(ctx.worker_pids(), ctx.stack.root)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        created = await http.post(
            "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 48}}
        )
        created.raise_for_status()
        generation_id = created.json()["generation_id"]
        while True:
            body = (await http.get(f"/v1/generations/{generation_id}")).json()
            if body["status"] != "building":
                break
            await asyncio.sleep(0.2)
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(ctx.worker_pids(), ctx.stack.root)
    children: dict[str, int] = {}
    async for wf in ctx.stack.client.list_workflows(
        f"TenantId = '{tenant}' AND WorkflowType != 'IndexingWorkflow' "
        "AND WorkflowType != 'GenerationWorkflow'"
    ):
        if f"/{generation_id}/" in wf.id:
            children[wf.workflow_type] = children.get(wf.workflow_type, 0) + 1
    return {
        "generation_id": generation_id,
        "status": body["status"],
        "documents_total": body["documents_total"],
        "documents_done": body["documents_done"],
        "documents_failed": body["documents_failed"],
        "wall_s": wall,
        "cpu_ms_per_doc": {
            k: (cpu_after[k] - cpu_before.get(k, 0.0)) / documents * 1000 for k in cpu_after
        },
        "children": children,
    }


async def _child_cost(ctx: Ctx, run_id: str, documents: int) -> tuple[Cost, dict[str, int]]:
    """What the run's children cost per document: the mean history of a sample of them
    (batches of small documents, or a workflow per document), times children per document;
    and how many children of each kind the run had."""
    kinds: dict[str, int] = {}
    ids: list[str] = []
    query = f"IndexingRunId = '{run_id}' AND WorkflowType != 'IndexingWorkflow'"
    async for wf in ctx.stack.client.list_workflows(query):
        kinds[wf.workflow_type] = kinds.get(wf.workflow_type, 0) + 1
        ids.append(wf.id)
    sample = sorted(ids)[:SAMPLED_CHILDREN]
    total = Cost()
    for wid in sample:
        total.add(await execution_cost(ctx.stack.client, wid))
    per_doc = Cost()
    for name in total.__dataclass_fields__:
        mean = getattr(total, name) / max(len(sample), 1)
        setattr(per_doc, name, mean * len(ids) / max(documents, 1))
    return per_doc, kinds


async def _create_directly(
    ctx: Ctx, files: list[tuple[str, bytes]], tenant: str, per_execution: int, window: int
) -> str:
    settings = ctx.stack.settings.model_copy(
        update={"documents_per_run_execution": per_execution, "max_concurrent_documents": window}
    )
    run_id, docs = await record_files(
        ctx.stack.pool, BlobStore.from_settings(settings), files, tenant
    )
    await start_run(ctx.stack.client, settings, run_id, len(docs), tenant)
    return run_id
