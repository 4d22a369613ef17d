"""Live state of running documents, asked of their workflows (the status query)."""

from __future__ import annotations

import asyncio

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from docindex.ids import document_workflow_id
from workflows import names
from workflows.document_contract import DocumentProgress


async def query_document(
    temporal: Client, run_id: str, document_id: str, timeout_s: float = 5.0
) -> DocumentProgress | None:
    """The document's own progress, or None when its workflow cannot answer (not started
    yet, already closed, or Temporal unreachable): callers fall back on what they have."""
    handle = temporal.get_workflow_handle(document_workflow_id(run_id, document_id))
    try:
        return await asyncio.wait_for(
            handle.query(names.STATUS_QUERY, result_type=DocumentProgress), timeout=timeout_s
        )
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        return None


async def query_running(
    temporal: Client, run_id: str, document_ids: list[str], timeout_s: float = 2.0
) -> dict[str, DocumentProgress]:
    """Progress of a run's running documents (at most its window), asked concurrently."""
    answers = await asyncio.gather(
        *(query_document(temporal, run_id, d, timeout_s) for d in document_ids)
    )
    return {d: a for d, a in zip(document_ids, answers, strict=True) if a is not None}
