"""Bulk replay: retry every document that failed with one error class, across runs."""

from __future__ import annotations

from fastapi import APIRouter

from docindex import repository
from docindex.models import RetryRequest
from workflows import starter

from ..deps import PrincipalDep, ResourcesDep
from ..schemas import BulkRetry, BulkRetryAccepted

router = APIRouter(prefix="/v1/retries", tags=["runs"])


@router.post("", response_model=BulkRetryAccepted)
async def retry_by_error_type(
    body: BulkRetry, res: ResourcesDep, principal: PrincipalDep
) -> BulkRetryAccepted:
    """After a provider outage: re-run every document of this tenant that failed with
    ``error_type``."""
    tenant = principal.tenant_id
    run_ids = await repository.runs_with_failures(res.pool, body.error_type, body.since, tenant)
    documents = 0
    for run_id in run_ids:
        run = await repository.get_run(res.pool, run_id, tenant)
        if run is None:
            continue
        accepted = await starter.retry_run(
            res.temporal,
            res.settings,
            run_id,
            run.document_count,
            RetryRequest(error_types=[body.error_type]),
            tenant,
            spec=run.pipeline,
            generation_id=run.generation_id,
        )
        documents += len(accepted.document_ids)
    return BulkRetryAccepted(runs=len(run_ids), documents=documents)
