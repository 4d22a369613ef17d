"""Live state of running documents, asked of their workflows (the status query): a
document's own DocumentWorkflow, or the batch workflow indexing it with others."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from docindex.ids import document_workflow_id, run_workflow_id
from workflows import names
from workflows.document_contract import DocumentProgress
from workflows.indexing_contract import RunProgress


async def _query(temporal: Client, workflow_id: str, result_type: Any, timeout_s: float) -> Any:
    handle = temporal.get_workflow_handle(workflow_id)
    try:
        return await asyncio.wait_for(
            handle.query(names.STATUS_QUERY, result_type=result_type), timeout=timeout_s
        )
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        return None


async def query_document(
    temporal: Client, run_id: str, document_id: str, timeout_s: float = 5.0
) -> DocumentProgress | None:
    """The document's own progress, or None when no workflow can answer (not started yet,
    already closed, or Temporal unreachable): callers fall back on what they have."""
    own = await _query(
        temporal, document_workflow_id(run_id, document_id), DocumentProgress, timeout_s
    )
    if own is not None:
        return own
    # Not a workflow of its own: a batch may be indexing it, which its run knows.
    run = await _query(temporal, run_workflow_id(run_id), RunProgress, timeout_s)
    known = next((d for d in run.documents if d.document_id == document_id), None) if run else None
    if known is None or known.workflow_id is None:
        return None
    found = await _batch(temporal, known.workflow_id, timeout_s)
    return found.get(document_id)


async def _batch(
    temporal: Client, workflow_id: str, timeout_s: float
) -> dict[str, DocumentProgress]:
    answer = await _query(temporal, workflow_id, list[DocumentProgress], timeout_s)
    return {p.document_id: p for p in answer or []}


async def query_running(
    temporal: Client, run_id: str, running: list[DocumentProgress], timeout_s: float = 2.0
) -> dict[str, DocumentProgress]:
    """Progress of a run's running documents (at most its window of children), asked
    concurrently: each batch once for all its documents."""
    own = [p.document_id for p in running if p.workflow_id is None]
    batches = sorted({p.workflow_id for p in running if p.workflow_id is not None})
    answers = await asyncio.gather(
        *(
            _query(temporal, document_workflow_id(run_id, d), DocumentProgress, timeout_s)
            for d in own
        ),
        *(_batch(temporal, b, timeout_s) for b in batches),
    )
    found = {d: a for d, a in zip(own, answers[: len(own)], strict=True) if a is not None}
    wanted = {p.document_id for p in running}
    for batch in answers[len(own) :]:
        found |= {d: p for d, p in batch.items() if d in wanted}
    return found
