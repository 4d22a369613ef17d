"""Semantic search over the chunks of completed documents."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from docindex import repository

from ..deps import ResourcesDep
from ..schemas import SearchHit, SearchRequest, SearchResponse

router = APIRouter(prefix="/v1/search", tags=["search"])


@router.post("", response_model=SearchResponse)
async def search(body: SearchRequest, res: ResourcesDep) -> SearchResponse:
    embedder = await res.embedder()
    vector = await asyncio.to_thread(embedder.embed_query, body.query)
    rows = await repository.search_chunks(res.pool, vector, embedder.model, body.top_k)
    return SearchResponse(
        model=embedder.model,
        results=[
            SearchHit(
                document_id=str(r["document_id"]),
                chunk_id=str(r["chunk_id"]),
                score=float(r["score"]),
                text=r["text"],
                pages=list(r["pages"]),
                headings=list(r["headings"]),
                filename=r["filename"],
            )
            for r in rows
        ],
    )
