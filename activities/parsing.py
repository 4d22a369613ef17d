"""CPU-queue activities: prepare a document (inspect, parse, describe, chunk), or parse a
big PDF as page ranges and merge them; OCR the pages that need it, in batches, and add the
text to the parse. Shells over ``docindex.steps.prepare``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from docindex.steps.models import (
    ApplyOcrInput,
    MergeInput,
    OcrInput,
    OcrResult,
    PageRangeInput,
    PageRangeResult,
    Prepared,
    PrepareInput,
)

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
            self.parse_page_range,
            self.merge_parsed_parts,
            self.ocr_pages,
            self.apply_ocr,
        ]
