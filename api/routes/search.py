"""Search over the chunks of completed documents: full-text, vector, or both fused."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from docindex import repository
from docindex.errors import ProviderError

from ..deps import PrincipalDep, ResourcesDep
from ..schemas import SearchHit, SearchRequest, SearchResponse, problems
from .metrics import SEARCH_SECONDS

router = APIRouter(prefix="/v1/search", tags=["search"], responses=problems(404, 502))


@router.post("", response_model=SearchResponse)
async def search(body: SearchRequest, res: ResourcesDep, principal: PrincipalDep) -> SearchResponse:
    """Chunks of this tenant's completed documents that best answer the query."""
    with SEARCH_SECONDS.time():
        return await _search(body, res, principal.tenant_id)


async def _search(body: SearchRequest, res: ResourcesDep, tenant: str) -> SearchResponse:
    # The tenant's active generation, or the one named (to compare before a promotion).
    if body.generation_id is not None:
        generation = await repository.get_generation(res.pool, str(body.generation_id), tenant)
        if generation is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such generation")
    else:
        generation = await repository.active_generation(res.pool, tenant)
        if generation is None:  # nothing uploaded yet
            return SearchResponse(model=None, mode=body.mode, results=[])
    vector, model = None, None
    if body.mode != "keyword":
        # Keyword search never waits for the embedder, so it answers when the provider
        # (or the local model, still loading) does not. Queries are embedded by the model
        # the generation's chunks were.
        embedder = await res.embedder(generation.spec.embedder)
        model = embedder.model
        try:
            vector = await embedder.embed_query(body.query)
        except ProviderError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE
                if exc.retryable
                else status.HTTP_502_BAD_GATEWAY,
                f"the embedding provider failed: {exc} (keyword mode needs no embeddings)",
                headers={"Retry-After": str(int(exc.retry_after_s))} if exc.retry_after_s else None,
            ) from exc
    hits = await repository.search_chunks(
        res.pool,
        vector,
        model,
        body.top_k,
        tenant,
        text=body.query,
        mode=body.mode,
        filters=repository.SearchFilters(
            document_ids=body.document_ids, filename=body.filename, metadata=body.metadata
        ),
        generation_id=generation.generation_id,
    )
    return SearchResponse(
        model=model,
        mode=body.mode,
        generation_id=generation.generation_id,
        results=[SearchHit.model_validate(h) for h in hits],
    )
