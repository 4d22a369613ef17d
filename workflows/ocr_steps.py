"""OCR of a parsed document's pages without text, then the parse with their text described
and chunked again: what a DocumentWorkflow and a group of documents (workflows/batch.py)
run when a prepare step reports pages to OCR."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from activities.parsing import ParseActivities
from docindex.spec import PipelineSpec
from docindex.steps.models import ApplyOcrInput, DocumentRef, OcrInput, OcrResult, Prepared

from .document_contract import DocumentProgress


class RunStep(Protocol):
    """Runs one activity of the document as the calling workflow runs its steps."""

    def __call__(self, activity: Any, arg: Any, *, summary: str) -> Awaitable[Any]: ...


async def ocr_and_apply(
    run_step: RunStep,
    document: DocumentRef,
    spec: PipelineSpec,
    max_parallel: int,
    prepared: Prepared,
    progress: DocumentProgress,
) -> Prepared:
    """OCR the pages with no readable text in batches (``max_parallel`` at once, on any CPU
    worker of the queue), then add their text to the parse, describe and chunk it."""
    assert prepared.parsed is not None
    progress.ocr_pages, progress.ocr_pages_done = len(prepared.ocr_pages), 0
    window = asyncio.Semaphore(max_parallel)
    size = spec.parser.ocr_batch_pages
    batches = [prepared.ocr_pages[i : i + size] for i in range(0, len(prepared.ocr_pages), size)]

    async def ocr(pages: list[int]) -> str:
        async with window:
            result: OcrResult = await run_step(
                ParseActivities.ocr_pages,
                OcrInput(document=document, parser=spec.parser, pages=pages),
                summary=f"{document.filename}: OCR of pages {pages[0]}-{pages[-1]}",
            )
        progress.ocr_pages_done = (progress.ocr_pages_done or 0) + len(pages)
        return result.ocr_key

    keys = await asyncio.gather(*(ocr(batch) for batch in batches))
    applied: Prepared = await run_step(
        ParseActivities.apply_ocr,
        ApplyOcrInput(
            document=document,
            parser=spec.parser,
            chunker=spec.chunker,
            parsed=prepared.parsed,
            ocr_keys=list(keys),
        ),
        summary=document.filename,
    )
    # The page count is the inspection's (a split PDF's merge knows it too).
    return applied.model_copy(update={"inspected": prepared.inspected})
