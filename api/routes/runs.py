"""Run status: live from the workflow's query while it runs, from Postgres after."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response, status
from temporalio.client import WorkflowExecutionStatus, WorkflowQueryFailedError
from temporalio.service import RPCError

from docindex import gc, repository
from docindex.api_models import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX
from docindex.models import DocStatus, RetryRequest, RunState
from docindex.repository import RunRow, storage
from workflows import names, starter
from workflows.indexing_contract import RetryAccepted, RunProgress

from ..deps import PrincipalDep, ResourcesDep
from ..live import query_running
from ..schemas import DocumentStatus, RetryBody, RunItem, RunPage, RunStatus, invalid, problems

router = APIRouter(prefix="/v1/runs", tags=["runs"], responses=problems(404, 409))

_OPEN = (RunState.QUEUED, RunState.RUNNING)
_ENDED_UNRECORDED = (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT)


@router.get("", response_model=RunPage)
async def list_runs(
    res: ResourcesDep,
    principal: PrincipalDep,
    status_: Annotated[RunState | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> RunPage:
    """This tenant's runs, newest first, a page at a time, as recorded (``GET
    /v1/runs/{id}`` has live progress); later uploads come before the first page, never
    into later ones."""
    try:
        after = repository.Position.from_cursor("runs", cursor) if cursor else None
    except ValueError as exc:
        raise invalid(("query", "cursor"), str(exc), cursor) from exc
    rows = await repository.list_runs(
        res.pool, principal.tenant_id, status=status_, after=after, limit=limit
    )
    last = rows[-1] if len(rows) == limit else None
    return RunPage(
        runs=[RunItem.model_validate(r) for r in rows],
        next_cursor=repository.Position(last.created_at, last.run_id).cursor("runs")
        if last
        else None,
    )


@router.get("/{run_id}", response_model=RunStatus)
async def get_run(run_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> RunStatus:
    run = await repository.get_run(res.pool, str(run_id), principal.tenant_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    documents = await _documents(res, run)
    live = await _query_run(res, run.workflow_id) if run.is_open else None
    if live is not None and live.status not in (*_OPEN, RunState.TERMINATED):
        # It finished between our read and the query; Postgres has the final word now.
        run = await repository.get_run(res.pool, run.run_id) or run
        documents = await _documents(res, run)
        live = None
    if live is None:
        by_status = {s: sum(d.status == s for d in documents) for s in DocStatus}
        return RunStatus(
            **_recorded(run),
            status=run.status,
            source="database",
            document_count=run.document_count,
            completed=by_status[DocStatus.COMPLETED],
            failed=by_status[DocStatus.FAILED],
            cancelled=by_status[DocStatus.CANCELLED],
            quarantined=by_status[DocStatus.QUARANTINED],
            running=0,
            documents=documents,
            **_summed(documents),
        )
    progress = {p.document_id: p for p in live.documents}
    # The run knows which documents are running; each knows its own step.
    running = [p for p in progress.values() if p.status == DocStatus.RUNNING]
    progress |= await query_running(res.temporal, str(run_id), running)
    for doc in documents:
        p = progress.get(doc.document_id)
        # Postgres holds final outcomes; the workflow knows what is happening right now.
        if p is not None and not doc.status.terminal:
            doc.status, doc.step, doc.pages_parsed = p.status, p.step, p.pages_parsed
            doc.ocr_pages, doc.ocr_pages_done = p.ocr_pages, p.ocr_pages_done
            doc.warning = p.warning or doc.warning
            doc.pages = p.pages if p.pages is not None else doc.pages
            doc.chunk_count = p.chunk_count if p.chunk_count is not None else doc.chunk_count
            doc.error_type, doc.error = p.error_type, p.error
    return RunStatus(
        **_recorded(run),
        status=live.status,
        source="workflow",
        document_count=live.document_count,
        completed=live.completed,
        failed=live.failed,
        cancelled=live.cancelled,
        quarantined=live.quarantined,
        running=live.running,
        documents=documents,
        **_summed(documents),
    )


def _recorded(run: RunRow) -> dict[str, Any]:
    """What the run's row says, whichever source its progress comes from."""
    return {
        "run_id": run.run_id,
        "workflow_id": run.workflow_id,
        "trace_id": run.trace_id,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "pipeline": run.pipeline.shown() if run.pipeline else None,
    }


async def _documents(res: ResourcesDep, run: RunRow) -> list[DocumentStatus]:
    rows = await repository.list_run_documents(res.pool, run.run_id)
    return [DocumentStatus.model_validate(r) for r in rows]


def _totals(documents: list[DocumentStatus]) -> tuple[dict[str, dict[str, Any]], float]:
    tokens: dict[str, dict[str, Any]] = {}
    for doc in documents:
        for key, usage in doc.tokens.items():
            into = tokens.setdefault(key, {})
            for field, value in usage.items():
                if isinstance(value, int | float):
                    into[field] = into.get(field, 0) + value
                else:
                    into.setdefault(field, value)
    return tokens, sum(d.cost_usd for d in documents)


def _summed(documents: list[DocumentStatus]) -> dict[str, Any]:
    tokens, cost = _totals(documents)
    return {"tokens": tokens, "cost_usd": cost}


async def _query_run(res: ResourcesDep, workflow_id: str) -> RunProgress | None:
    handle = res.temporal.get_workflow_handle(workflow_id)
    try:
        description = await asyncio.wait_for(handle.describe(), timeout=5)
        if description.status in _ENDED_UNRECORDED:
            # Terminated or timed out: the run never recorded its end, and a query would
            # replay its last state ("running") forever. Say what happened; a retry of
            # the run picks up every document it left unfinished.
            progress = await asyncio.wait_for(
                handle.query(names.STATUS_QUERY, result_type=RunProgress), timeout=5
            )
            return progress.model_copy(update={"status": RunState.TERMINATED, "running": 0})
        return await asyncio.wait_for(
            handle.query(names.STATUS_QUERY, result_type=RunProgress), timeout=5
        )
    except (RPCError, WorkflowQueryFailedError, TimeoutError):
        # The run finished between our read and the query, or Temporal is unreachable:
        # answer from the database rather than fail.
        return None


@router.post("/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_run(
    run_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> dict[str, str]:
    """Cancel a run: running documents stop at their next heartbeat, their partial chunks
    are removed, and every unfinished document ends ``cancelled``. Same effect as
    ``temporal workflow cancel -w index-run/<run_id>``."""
    run = await repository.get_run(res.pool, str(run_id), principal.tenant_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    if not run.is_open:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the run is already {run.status}")
    try:
        await res.temporal.get_workflow_handle(run.workflow_id).cancel()
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return {"run_id": str(run_id), "status": "cancelling"}


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_run(run_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep) -> Response:
    """Delete a finished run: its documents, their chunks (they leave search at once), the
    run's PDF password, and stored files and step artifacts no other document of the tenant
    has the same bytes for (docindex/gc.py)."""
    run = await repository.get_run(res.pool, str(run_id), principal.tenant_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    if run.is_open or await storage.run_has_open_documents(res.pool, str(run_id)):
        raise HTTPException(status.HTTP_409_CONFLICT, "the run is running; cancel it first")
    await gc.delete_run(res.pool, res.blobs, principal.tenant_id, str(run_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{run_id}/retry", response_model=RetryAccepted)
async def retry_run(
    run_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep, body: RetryBody | None = None
) -> RetryAccepted:
    """Index again the failed or cancelled documents of a run (an Update on the run).

    Steps that already succeeded for a document are not redone: their results are kept in
    the blob store, keyed by content and step configuration."""
    run = await repository.get_run(res.pool, str(run_id), principal.tenant_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    request = RetryRequest(error_types=body.error_types if body else None)
    try:
        return await starter.retry_run(
            res.temporal,
            res.settings,
            run.run_id,
            run.document_count,
            request,
            principal.tenant_id,
            spec=run.pipeline,
            generation_id=run.generation_id,
        )
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
