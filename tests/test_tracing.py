"""One trace per upload: the HTTP request, both workflows, and every step's activity."""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client

from .helpers import wait_for_run


async def test_an_upload_is_one_trace_from_request_to_every_activity(
    api: httpx.AsyncClient, client: Client, corpus: Path, spans: InMemorySpanExporter
) -> None:
    data = (corpus / "pdf/pypdf/crazyones.pdf").read_bytes()
    accepted = (await api.post("/v1/documents", files=[("files", ("c.pdf", data))])).json()
    trace_id = accepted["trace_id"]
    assert trace_id and len(trace_id) == 32
    run = await wait_for_run(api, accepted["run_id"])
    assert run["status"] == "completed" and run["trace_id"] == trace_id
    # Postgres says completed a moment before the workflow's last task ends its span.
    await client.get_workflow_handle(f"index-run/{accepted['run_id']}").result()

    names = {
        s.name for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id
    }
    assert any(n.startswith("POST /v1/documents") for n in names)
    for expected in (
        "StartWorkflow:IndexingWorkflow",
        "RunWorkflow:IndexingWorkflow",
        "StartChildWorkflow:DocumentWorkflow",
        "RunWorkflow:DocumentWorkflow",
        *(
            f"RunActivity:{step}"
            for step in (
                "prepare_document",
                "embed_chunks",
                "store_document",
            )
        ),
    ):
        assert expected in names, (expected, sorted(names))
