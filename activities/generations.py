"""Small database activities of ``GenerationWorkflow``: page the documents a generation
still lacks, record its size and its end. Local activities on the workflow worker."""

from __future__ import annotations

import asyncpg
from pydantic import BaseModel
from temporalio import activity

from docindex import repository
from docindex.models import DocumentTask, GenerationStatus
from docindex.spec import ParserSpec, PipelineSpec


class ToDeriveInput(BaseModel):
    generation_id: str
    tenant_id: str
    after_document_id: str | None
    limit: int


class DocumentToDerive(BaseModel):
    task: DocumentTask
    # The parser of the run that indexed it: the generation reuses that parse.
    parser: ParserSpec | None = None


class FinishBuildInput(BaseModel):
    generation_id: str
    status: GenerationStatus
    error: str | None = None


class GenerationTotalInput(BaseModel):
    generation_id: str
    tenant_id: str


class GenerationBookkeeping:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @activity.defn
    async def documents_to_derive(self, inp: ToDeriveInput) -> list[DocumentToDerive]:
        found = await repository.documents_to_derive(
            self.pool, inp.generation_id, inp.tenant_id, inp.after_document_id, inp.limit
        )
        return [
            DocumentToDerive(
                task=DocumentTask(
                    run_id=d.run_id,
                    document_id=d.document_id,
                    tenant_id=inp.tenant_id,
                    seq=d.seq,
                    filename=d.filename,
                    sha256=d.sha256,
                    size_bytes=d.size_bytes,
                    blob_key=d.blob_key,
                    password_key=d.password_key,
                ),
                parser=PipelineSpec.model_validate({"parser": d.parser}).parser
                if d.parser
                else None,
            )
            for d in found
        ]

    @activity.defn
    async def count_generation_documents(self, inp: GenerationTotalInput) -> int:
        """The documents the generation is to hold: the tenant's completed ones, now."""
        total = await repository.count_completed_documents(self.pool, inp.tenant_id)
        await repository.set_documents_total(self.pool, inp.generation_id, total)
        return total

    @activity.defn
    async def finish_build(self, inp: FinishBuildInput) -> GenerationStatus:
        return await repository.finish_build(self.pool, inp.generation_id, inp.status, inp.error)

    def all(self) -> list:
        return [self.documents_to_derive, self.count_generation_documents, self.finish_build]
