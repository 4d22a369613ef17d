"""The CPU steps without Temporal (docindex/steps/prepare.py), with a real cage and Docling.

A document never parsed before is inspected, parsed, described and chunked in one call in a
parse process, which sends back JSON (``caged.prepare``); so are a split PDF's merged ranges
(``caged.merge``) and a parse with its OCR text (``caged.apply_ocr``). A document parsed
before (a reindex, another generation) is described and chunked in the worker from the
saved parse. Both must make the same chunks and metadata, or a reindex would change what
search finds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from docindex.blobstore import BlobStore, upload_key
from docindex.cage import Cage, CageLimits
from docindex.components import Components
from docindex.config import Settings
from docindex.pipeline.parsing import ParseLimits
from docindex.spec import resolve_spec
from docindex.steps.models import (
    ApplyOcrInput,
    DocumentRef,
    MergeInput,
    OcrInput,
    PageRangeInput,
    Prepared,
    PrepareInput,
)
from docindex.steps.prepare import PrepareSteps
from docindex.steps.progress import Progress

from .test_ocr import scanned_crazyones, text_then_scan

DATA = Path(__file__).parent / "data"


@pytest_asyncio.fixture
async def steps(tmp_path: Path) -> AsyncIterator[PrepareSteps]:
    settings = Settings(data_dir=tmp_path)
    cage = Cage(CageLimits(processes=1))
    yield PrepareSteps(BlobStore.from_settings(settings), Components(settings, ParseLimits()), cage)
    cage.close()


async def _prepare_input(
    steps: PrepareSteps, data: bytes, filename: str, **parser: int
) -> PrepareInput:
    sha = hashlib.sha256(data).hexdigest()
    ref = DocumentRef(
        document_id=sha[:12],
        tenant_id="t1",
        filename=filename,
        sha256=sha,
        blob_key=upload_key("t1", sha),
    )
    await steps.blobs.put(ref.blob_key, data)
    spec = resolve_spec(Settings())
    return PrepareInput(
        document=ref, parser=spec.parser.model_copy(update=parser), chunker=spec.chunker
    )


@pytest.mark.parametrize(
    "path", ["pdf/docling/multi_page.pdf", "office/docling/word_sample.docx"], ids=str
)
async def test_a_fresh_prepare_makes_what_a_prepare_from_the_saved_parse_makes(
    steps: PrepareSteps, path: str
) -> None:
    inp = await _prepare_input(steps, (DATA / path).read_bytes(), Path(path).name)

    fresh = await steps.prepare(inp, Progress())

    await _same_as_from_the_saved_parse(steps, fresh, lambda: steps.prepare(inp, Progress()))


async def test_a_scan_comes_back_as_its_text_layer_with_the_pages_to_ocr(
    steps: PrepareSteps,
) -> None:
    inp = await _prepare_input(steps, scanned_crazyones(), "scan.pdf")

    prepared = await steps.prepare(inp, Progress())

    assert prepared.ocr_pages == [1]
    assert prepared.parsed is not None and ".text-layer" in prepared.parsed.parsed_key
    assert await steps.blobs.exists(prepared.parsed.parsed_key)
    # Not the document's parse yet: that is saved once the OCR text is in it.
    assert prepared.chunked is None and prepared.metadata is None


async def _same_as_from_the_saved_parse(
    steps: PrepareSteps, fresh: Prepared, again: Callable[[], Awaitable[Prepared]]
) -> None:
    """``fresh`` (made in a parse process) is what ``again`` makes from the parse it saved,
    described and chunked in the worker, once its chunks are gone (as a reindex with
    another chunker would find it)."""
    assert fresh.parsed is not None and not fresh.parsed.reused
    assert fresh.chunked is not None and fresh.chunked.chunk_count > 0
    assert fresh.metadata is not None
    chunks = await steps.blobs.get(fresh.chunked.chunks_key)
    parse = await steps.blobs.get(fresh.parsed.parsed_key)
    await steps.blobs.delete(fresh.chunked.chunks_key)

    redone = await again()

    assert redone.parsed is not None and redone.parsed.reused
    assert redone.parsed.parsed_key == fresh.parsed.parsed_key
    assert await steps.blobs.get(redone.parsed.parsed_key) == parse
    assert redone.chunked is not None and redone.chunked.chunks_key == fresh.chunked.chunks_key
    assert redone.chunked.chunk_count == fresh.chunked.chunk_count
    assert await steps.blobs.get(redone.chunked.chunks_key) == chunks
    assert redone.metadata == fresh.metadata
    assert redone.inspected == fresh.inspected


async def test_a_split_pdf_with_a_scanned_page_is_merged_and_ocred_as_a_whole_one_is(
    steps: PrepareSteps,
) -> None:
    """Its page ranges parsed, merged, its scanned page OCRed and applied: the merge and the
    OCR's application run in a parse process too, and make what the worker makes from the
    saved parse; the text of both pages is in the chunks."""
    inp = await _prepare_input(
        steps, text_then_scan(), "mixed.pdf", split_pdf_pages=1, range_pages=1
    )
    doc, parser, chunker = inp.document, inp.parser, inp.chunker

    inspected = await steps.prepare(inp, Progress())
    assert inspected.parsed is None and inspected.inspected.pages == 2
    parts = [
        key
        for page in (1, 2)
        for key in (
            await steps.parse_page_range(
                PageRangeInput(document=doc, parser=parser, first_page=page, last_page=page),
                Progress(),
            )
        ).part_keys
    ]
    merge = MergeInput(document=doc, parser=parser, chunker=chunker, part_keys=parts)
    merged = await steps.merge(merge, Progress())

    # The scanned page has no text layer: the merge is the text layer's, to be OCRed.
    assert merged.ocr_pages == [2] and merged.chunked is None
    assert merged.parsed is not None and ".text-layer" in merged.parsed.parsed_key
    assert merged.inspected.pages == 2
    ocr = await steps.ocr(OcrInput(document=doc, parser=parser, pages=[2]), Progress())
    apply = ApplyOcrInput(
        document=doc, parser=parser, chunker=chunker, parsed=merged.parsed, ocr_keys=[ocr.ocr_key]
    )
    applied = await steps.apply_ocr(apply, Progress())

    assert applied.chunked is not None and applied.metadata is not None
    assert applied.metadata.quality is not None and applied.metadata.quality.ocr == 1
    text = " ".join(
        c["text"] for c in json.loads(await steps.blobs.get(applied.chunked.chunks_key))
    )
    assert "crazy ones" in text.lower()  # the scan's words, read by OCR
    await _same_as_from_the_saved_parse(steps, applied, lambda: steps.apply_ocr(apply, Progress()))


async def test_a_split_pdf_merged_in_a_parse_process_is_what_a_merge_of_its_saved_parse_makes(
    steps: PrepareSteps,
) -> None:
    inp = await _prepare_input(
        steps,
        (DATA / "pdf/docling/multi_page.pdf").read_bytes(),
        "multi_page.pdf",
        split_pdf_pages=2,
        range_pages=2,
    )
    doc, parser = inp.document, inp.parser
    pages = (await steps.prepare(inp, Progress())).inspected.pages
    assert pages is not None and pages > 2
    parts = [
        key
        for first in range(1, pages + 1, 2)
        for key in (
            await steps.parse_page_range(
                PageRangeInput(
                    document=doc, parser=parser, first_page=first, last_page=min(first + 1, pages)
                ),
                Progress(),
            )
        ).part_keys
    ]
    merge = MergeInput(document=doc, parser=parser, chunker=inp.chunker, part_keys=parts)

    merged = await steps.merge(merge, Progress())

    assert merged.inspected.pages == pages and merged.ocr_pages == []
    await _same_as_from_the_saved_parse(steps, merged, lambda: steps.merge(merge, Progress()))
