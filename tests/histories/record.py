"""Record workflow histories for the replay test (tests/test_replay.py).

The replay test guards the current workflow version: runs of an older build finish on that
build's workers (Worker Versioning, pinned), so only the current version's histories are
kept. After a workflow change that is a new build, record them again and commit them:

    python -m tests.histories.record tests/histories/<label>

It starts its own stack (bench.stack: embedded Postgres, a Temporal dev server, one worker
process per kind and the API) and indexes a few documents from tests/data that take every
path: a one-page PDF, a DOCX, a PDF split into page ranges, and a damaged PDF that fails;
then builds a generation of them (its workflow, and one document's derive); then a run of
small notes in batches, one of which holds the damaged PDF (handed back to a workflow of its
own), and a generation of those notes, derived in batches; and a side-by-side batch of a
scan (OCRed in it), a PDF, a DOCX and the damaged PDF, and a generation of those, derived
side by side.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench.stack import Stack
from docindex.ids import derive_workflow_id, document_workflow_id, run_workflow_id
from tests.helpers import DATA

DOCUMENTS = {
    "one_page_pdf": "pdf/pypdf/crazyones.pdf",
    "docx": "office/docling/word_sample.docx",
    "split_pdf": "pdf/docling/multi_page.pdf",
    "damaged_pdf": "broken/zen_of_python_corrupted.pdf",
}


async def record() -> dict[str, str]:
    """History JSON by label, run.json for the parent run."""
    files = [("files", (Path(p).name, (DATA / p).read_bytes())) for p in DOCUMENTS.values()]
    histories: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as root:
        async with Stack(Path(root)) as stack:
            await stack.start_workers()
            _, url = await stack.start_api(DOCINDEX_SPLIT_PDF_PAGES="3", DOCINDEX_RANGE_PAGES="2")
            headers = await stack.api_headers("histories")
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                accepted = (await http.post("/v1/documents", files=files)).json()
                run_id = accepted["run_id"]
                while True:
                    run = (await http.get(f"/v1/runs/{run_id}")).json()
                    if run["status"] not in ("queued", "running"):
                        break
                    await asyncio.sleep(0.5)
                # A generation built from those documents (derive children reuse parses).
                created = await http.post(
                    "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 64}}
                )
                generation = created.json()
                while True:
                    status = (await http.get(generation["status_url"])).json()["status"]
                    if status != "building":
                        break
                    await asyncio.sleep(0.5)
            ids = {d["filename"]: d["document_id"] for d in accepted["documents"]}
            parent = stack.client.get_workflow_handle(run_workflow_id(run_id))
            histories["run"] = (await parent.fetch_history()).to_json()
            for label, path in DOCUMENTS.items():
                child_id = document_workflow_id(run_id, ids[Path(path).name])
                history = await stack.client.get_workflow_handle(child_id).fetch_history()
                histories[label] = history.to_json()
            build = stack.client.get_workflow_handle(generation["workflow_id"])
            histories["generation"] = (await build.fetch_history()).to_json()
            derive = derive_workflow_id(
                generation["generation_id"], ids[Path(DOCUMENTS["docx"]).name]
            )
            histories["derive_docx"] = (
                await stack.client.get_workflow_handle(derive).fetch_history()
            ).to_json()
            print(f"run {run_id}: {run['status']}; generation {status}")
            histories |= await _record_batches(stack)
            histories |= await _record_side_by_side(stack)
    return histories


async def _record_batches(stack: Stack) -> dict[str, str]:
    _, url = await stack.start_api(
        DOCINDEX_BATCH_DOCUMENTS="3", DOCINDEX_BATCH_MIN_RUN_DOCUMENTS="2"
    )
    damaged = DATA / DOCUMENTS["damaged_pdf"]
    files = [
        ("files", (f"note-{i}.md", f"# Note {i}\n\nA small note, number {i}.".encode()))
        for i in range(4)
    ]
    files.insert(1, ("files", (damaged.name, damaged.read_bytes())))
    run, batch = await _batched_run(stack, url, "histories-batches", files)
    build, derive_batch = await _batched_build(stack, url, "histories-batches")
    return {
        "batch_run": run,
        "batch": batch,
        "generation_batched": build,
        "derive_batch": derive_batch,
    }


async def _batched_build(stack: Stack, url: str, tenant: str) -> tuple[str, str]:
    """A generation of the tenant's documents, its small ones derived in batches; its
    history and its longest batch's."""
    headers = await stack.api_headers(tenant)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        created = await http.post(
            "/v1/generations", json={"chunker": {"kind": "hybrid", "max_tokens": 64}}
        )
        generation = created.json()
        while True:
            if (await http.get(generation["status_url"])).json()["status"] != "building":
                break
            await asyncio.sleep(0.5)
    batches = [
        (await stack.client.get_workflow_handle(wf.id).fetch_history()).to_json()
        async for wf in stack.client.list_workflows("WorkflowType = 'DocumentBatchWorkflow'")
        if f"/{generation['generation_id']}/" in wf.id
    ]
    build = stack.client.get_workflow_handle(generation["workflow_id"])
    return (await build.fetch_history()).to_json(), max(batches, key=len)


async def _record_side_by_side(stack: Stack) -> dict[str, str]:
    """A side-by-side batch: a scan OCRed in it, a PDF, a DOCX, the damaged PDF handed back."""
    from tests.test_ocr import scanned_crazyones

    _, url = await stack.start_api(
        DOCINDEX_BATCH_DOCUMENTS="4",
        DOCINDEX_BATCH_MIN_RUN_DOCUMENTS="1000",
        DOCINDEX_SIDE_BY_SIDE_MIN_RUN_DOCUMENTS="2",
        DOCINDEX_MAX_CONCURRENT_DOCUMENTS="2",  # one batch of the four, two at a time
    )
    files = [("files", ("scan.pdf", scanned_crazyones()))]
    for label in ("one_page_pdf", "damaged_pdf", "docx"):
        path = DATA / DOCUMENTS[label]
        files.append(("files", (path.name, path.read_bytes())))
    run, batch = await _batched_run(stack, url, "histories-side-by-side", files)
    build, derive_batch = await _batched_build(stack, url, "histories-side-by-side")
    return {
        "side_by_side_run": run,
        "side_by_side": batch,
        "generation_side_by_side": build,
        "derive_side_by_side": derive_batch,
    }


async def _batched_run(
    stack: Stack, url: str, tenant: str, files: list[tuple[str, tuple[str, bytes]]]
) -> tuple[str, str]:
    """Upload the files as one run; its history and its longest batch's."""
    headers = await stack.api_headers(tenant)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
        run_id = (await http.post("/v1/documents", files=files)).json()["run_id"]
        while True:
            if (await http.get(f"/v1/runs/{run_id}")).json()["status"] not in (
                "queued",
                "running",
            ):
                break
            await asyncio.sleep(0.5)
    query = f"IndexingRunId = '{run_id}' AND WorkflowType = 'DocumentBatchWorkflow'"
    batches = [
        (await stack.client.get_workflow_handle(wf.id).fetch_history()).to_json()
        async for wf in stack.client.list_workflows(query)
    ]
    run = await stack.client.get_workflow_handle(run_workflow_id(run_id)).fetch_history()
    # The longest batch: the one that handed the damaged PDF back.
    return run.to_json(), max(batches, key=len)


def without_stack_traces(node: Any) -> Any:
    """Failures carry the recording machine's stack traces (its paths); replay needs none."""
    if isinstance(node, dict):
        return {k: "" if k == "stackTrace" else without_stack_traces(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_stack_traces(v) for v in node]
    return node


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for label, history in asyncio.run(record()).items():
        cleaned = without_stack_traces(json.loads(history))
        (out / f"{label}.json").write_text(json.dumps(cleaned, indent=1) + "\n")
    print(f"histories in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
