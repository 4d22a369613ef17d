"""Semantic search over the chunks of completed documents."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from docindex import repository
from docindex.errors import ProviderError

from ..deps import PrincipalDep, ResourcesDep
from ..schemas import SearchHit, SearchRequest, SearchResponse, problems
from .metrics import SEARCH_SECONDS

router = APIRouter(prefix="/v1/search", tags=["search"], responses=problems(502))


@router.post("", response_model=SearchResponse)
async def search(body: SearchRequest, res: ResourcesDep, principal: PrincipalDep) -> SearchResponse:
    """Chunks of this tenant's completed documents nearest to the query."""
    with SEARCH_SECONDS.time():
        return await _search(body, res, principal.tenant_id)


async def _search(body: SearchRequest, res: ResourcesDep, tenant: str) -> SearchResponse:
    embedder = await res.embedder()
    try:
        vector = await embedder.embed_query(body.query)
    except ProviderError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY,
            f"the embedding provider failed: {exc}",
            headers={"Retry-After": str(int(exc.retry_after_s))} if exc.retry_after_s else None,
        ) from exc
    hits = await repository.search_chunks(res.pool, vector, embedder.model, body.top_k, tenant)
    return SearchResponse(model=embedder.model, results=[SearchHit.model_validate(h) for h in hits])
