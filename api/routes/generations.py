"""Index generations: build a new index from what is indexed, compare, promote, roll back;
and the golden queries a promotion can be required to pass."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.responses import JSONResponse
from temporalio.service import RPCError

from docindex import repository

from ..deps import PrincipalDep, ResourcesDep
from ..schemas import (
    EvalSetRequest,
    EvalSetSummary,
    GenerationAccepted,
    GenerationDetail,
    GenerationList,
    GenerationRequest,
    PromoteRequest,
    PromoteResult,
    problems,
)
from ..services import generations as service

router = APIRouter(prefix="/v1/generations", tags=["generations"], responses=problems(404, 409))
eval_sets = APIRouter(prefix="/v1/eval-sets", tags=["generations"])


def _detail(row: repository.GenerationRow) -> GenerationDetail:
    return GenerationDetail(
        generation_id=row.generation_id,
        status=row.status,
        documents_total=row.documents_total,
        documents_done=row.documents_done,
        documents_failed=row.documents_failed,
        chunk_count=row.chunk_count,
        tokens=row.tokens or {},
        cost_usd=row.cost_usd,
        pipeline={
            "digest": row.spec.digest,
            "chunker": row.spec.chunker.model_dump(mode="json"),
            "embedder": row.spec.embedder.model_dump(mode="json"),
            "enricher": row.spec.enricher.model_dump(mode="json"),
        },
        workflow_id=row.workflow_id,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
        promoted_at=row.promoted_at,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=GenerationAccepted)
async def create_generation(
    body: GenerationRequest, res: ResourcesDep, principal: PrincipalDep
) -> GenerationAccepted:
    """Build a new index generation of every indexed document of this tenant, from the
    parses it already has. Search keeps serving the active generation until this one is
    promoted. One generation builds at a time (409 while another does)."""
    try:
        generation_id = await service.create(res, principal.tenant_id, body)
    except service.GenerationRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    row = await repository.get_generation(res.pool, generation_id)
    assert row is not None
    return GenerationAccepted(
        generation_id=generation_id,
        status_url=f"/v1/generations/{generation_id}",
        workflow_id=row.workflow_id or "",
    )


@router.get("", response_model=GenerationList)
async def list_generations(res: ResourcesDep, principal: PrincipalDep) -> GenerationList:
    """This tenant's generations, newest first."""
    rows = await repository.list_generations(res.pool, principal.tenant_id)
    return GenerationList(generations=[_detail(r) for r in rows])


async def _owned(
    res: ResourcesDep, tenant: str, generation_id: uuid.UUID
) -> repository.GenerationRow:
    row = await repository.get_generation(res.pool, str(generation_id), tenant)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such generation")
    return row


@router.get("/{generation_id}", response_model=GenerationDetail)
async def get_generation(
    generation_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> GenerationDetail:
    return _detail(await _owned(res, principal.tenant_id, generation_id))


@router.post("/{generation_id}/promote", response_model=PromoteResult)
async def promote_generation(
    generation_id: uuid.UUID,
    res: ResourcesDep,
    principal: PrincipalDep,
    body: PromoteRequest | None = None,
) -> PromoteResult | JSONResponse:
    """Make this generation the one search serves, atomically; the one it replaces is
    retired and kept up to date, so promoting it again rolls back. With ``require``, the
    eval set is run on both first and a worse or below-the-bar generation is refused (409,
    with both scores)."""
    await _owned(res, principal.tenant_id, generation_id)
    gate = body.require if body else None
    try:
        row, previous, scores = await service.promote(
            res, principal.tenant_id, str(generation_id), gate
        )
    except service.PromotionRefused as exc:
        return JSONResponse(
            status_code=status.HTTP_409_CONFLICT,
            content={"detail": str(exc), "evaluation": exc.scores.model_dump(mode="json")},
        )
    except service.GenerationRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except service.UnknownEvalSet as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no eval set named {exc}") from exc
    return PromoteResult(
        generation_id=row.generation_id,
        status=row.status,
        previous_generation_id=previous,
        evaluation=scores,
    )


@router.post("/{generation_id}/cancel", status_code=status.HTTP_202_ACCEPTED)
async def cancel_generation(
    generation_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> dict[str, str]:
    """Stop a build; its chunks are deleted and search never saw them."""
    row = await _owned(res, principal.tenant_id, generation_id)
    if row.status != repository.GenerationStatus.BUILDING or row.workflow_id is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"the generation is {row.status}")
    try:
        await res.temporal.get_workflow_handle(row.workflow_id).cancel()
    except RPCError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return {"generation_id": row.generation_id, "status": "cancelling"}


@router.delete("/{generation_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_generation(
    generation_id: uuid.UUID, res: ResourcesDep, principal: PrincipalDep
) -> Response:
    """Delete a generation that is not serving nor building, and its chunks."""
    try:
        await repository.delete_generation(res.pool, principal.tenant_id, str(generation_id))
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such generation") from exc
    except repository.GenerationConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@eval_sets.post("", response_model=EvalSetSummary, status_code=status.HTTP_201_CREATED)
async def save_eval_set(
    body: EvalSetRequest, res: ResourcesDep, principal: PrincipalDep
) -> EvalSetSummary:
    """Save (or replace) golden queries: each a query and the documents that answer it."""
    queries = [
        {"query": q.query, "document_ids": [str(d) for d in q.document_ids]} for q in body.queries
    ]
    await repository.save_eval_set(res.pool, principal.tenant_id, body.name, queries)
    for name, count, updated_at in await repository.list_eval_sets(res.pool, principal.tenant_id):
        if name == body.name:
            return EvalSetSummary(name=name, queries=count, updated_at=updated_at)
    raise AssertionError("the eval set was just saved")


@eval_sets.get("", response_model=list[EvalSetSummary])
async def list_eval_sets(res: ResourcesDep, principal: PrincipalDep) -> list[EvalSetSummary]:
    return [
        EvalSetSummary(name=n, queries=c, updated_at=u)
        for n, c, u in await repository.list_eval_sets(res.pool, principal.tenant_id)
    ]
