"""CPU-queue activities: prepare a document (inspect, parse, describe, chunk), or several
small ones at once, or parse a big PDF as page ranges and merge them; OCR the pages that
need it, in batches, and add the text to the parse. Shells over ``docindex.steps.prepare``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from docindex.errors import DocumentError, ParseKilled
from docindex.steps.models import (
    ApplyOcrInput,
    HandedBack,
    MergeInput,
    OcrInput,
    OcrResult,
    PageRangeInput,
    PageRangeResult,
    PrepareBatchInput,
    Prepared,
    PreparedBatch,
    PrepareInput,
)

from .batching import run_steps
from .errors import document_errors_are_final
from .heartbeat import run_step

if TYPE_CHECKING:  # Docling: imported by the CPU worker, never by the workflow worker
    from docindex.steps.prepare import PrepareSteps


class ParseActivities:
    def __init__(self, steps: PrepareSteps) -> None:
        self.steps = steps

    @activity.defn
    @document_errors_are_final
    async def prepare_document(self, inp: PrepareInput) -> Prepared:
        return await run_step(self.steps.prepare, inp)

    @activity.defn
    async def prepare_documents(self, inp: PrepareBatchInput) -> PreparedBatch:
        """Several small documents at once, through the worker's parse processes."""
        items = {item.document.document_id: item for item in inp.items}
        prepared, handed_back = await run_steps(self.steps.prepare, items, _parse_errors)
        return PreparedBatch(prepared=prepared, handed_back=handed_back)

    @activity.defn
    @document_errors_are_final
    async def parse_page_range(self, inp: PageRangeInput) -> PageRangeResult:
        previous = activity.info().heartbeat_details
        if previous and isinstance(previous[0], dict):
            activity.logger.info(
                "resuming %s after page %s",
                inp.document.filename,
                previous[0].get("resume_after_page"),
            )
        return await run_step(self.steps.parse_page_range, inp)

    @activity.defn
    @document_errors_are_final
    async def merge_parsed_parts(self, inp: MergeInput) -> Prepared:
        return await run_step(self.steps.merge, inp)

    @activity.defn
    @document_errors_are_final
    async def ocr_pages(self, inp: OcrInput) -> OcrResult:
        return await run_step(self.steps.ocr, inp)

    @activity.defn
    @document_errors_are_final
    async def apply_ocr(self, inp: ApplyOcrInput) -> Prepared:
        return await run_step(self.steps.apply_ocr, inp)

    def all(self) -> list:
        return [
            self.prepare_document,
            self.prepare_documents,
            self.parse_page_range,
            self.merge_parsed_parts,
            self.ocr_pages,
            self.apply_ocr,
        ]


def _parse_errors(exc: BaseException) -> HandedBack | None:
    """Bad bytes, or a parse process that died or stalled on this document: its own
    workflow retries it (and quarantines it if it keeps killing parses)."""
    if isinstance(exc, DocumentError | ParseKilled):
        return HandedBack(error_type=exc.error_type, error=str(exc))
    return None
