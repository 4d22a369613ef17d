"""The CPU steps without Temporal (docindex/steps/prepare.py), with a real cage and Docling.

A document never parsed before is inspected, parsed, described and chunked in one call in a
parse process, which sends back JSON (``caged.prepare``); a document parsed before (a
reindex, another generation) is described and chunked in the worker from the saved parse.
Both must make the same chunks and metadata, or a reindex would change what search finds.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from docindex.blobstore import BlobStore, upload_key
from docindex.cage import Cage, CageLimits
from docindex.components import Components
from docindex.config import Settings
from docindex.pipeline.parsing import ParseLimits
from docindex.spec import resolve_spec
from docindex.steps.models import DocumentRef, PrepareInput
from docindex.steps.prepare import PrepareSteps
from docindex.steps.progress import Progress

from .test_ocr import scanned_crazyones

DATA = Path(__file__).parent / "data"


@pytest_asyncio.fixture
async def steps(tmp_path: Path) -> AsyncIterator[PrepareSteps]:
    settings = Settings(data_dir=tmp_path)
    cage = Cage(CageLimits(processes=1))
    yield PrepareSteps(BlobStore.from_settings(settings), Components(settings, ParseLimits()), cage)
    cage.close()


async def _prepare_input(steps: PrepareSteps, data: bytes, filename: str) -> PrepareInput:
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
    return PrepareInput(document=ref, parser=spec.parser, chunker=spec.chunker)


@pytest.mark.parametrize(
    "path", ["pdf/docling/multi_page.pdf", "office/docling/word_sample.docx"], ids=str
)
async def test_a_fresh_prepare_makes_what_a_prepare_from_the_saved_parse_makes(
    steps: PrepareSteps, path: str
) -> None:
    inp = await _prepare_input(steps, (DATA / path).read_bytes(), Path(path).name)

    fresh = await steps.prepare(inp, Progress())
    assert fresh.parsed is not None and not fresh.parsed.reused
    assert fresh.chunked is not None and fresh.chunked.chunk_count > 0
    assert fresh.metadata is not None
    chunks = await steps.blobs.get(fresh.chunked.chunks_key)
    parse = await steps.blobs.get(fresh.parsed.parsed_key)

    # As a reindex with another chunker would find it: the parse saved, no chunks.
    await steps.blobs.delete(fresh.chunked.chunks_key)
    again = await steps.prepare(inp, Progress())

    assert again.parsed is not None and again.parsed.reused
    assert again.parsed.parsed_key == fresh.parsed.parsed_key
    assert await steps.blobs.get(again.parsed.parsed_key) == parse
    assert again.chunked is not None
    assert again.chunked.chunks_key == fresh.chunked.chunks_key
    assert again.chunked.chunk_count == fresh.chunked.chunk_count
    assert await steps.blobs.get(again.chunked.chunks_key) == chunks
    assert again.metadata == fresh.metadata
    assert again.inspected == fresh.inspected


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
