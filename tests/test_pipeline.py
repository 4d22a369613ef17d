"""The pipeline's plain functions, without Temporal: format sniffing, parsing, chunking,
embedding. Parsing runs the real Docling over the documents in tests/data, and over the
larger development corpus too where a checkout has one (bench.parse_quality.default_corpus)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from bench.parse_quality import default_corpus
from docindex import spec
from docindex.config import Settings
from docindex.errors import (
    CorruptDocument,
    DocumentError,
    EmptyDocument,
    EncryptedDocument,
    ParseTimeout,
    TooLarge,
    UnsupportedFormat,
)
from docindex.filetypes import DocumentKind, detect_kind
from docindex.pipeline.chunking import DocumentChunker
from docindex.pipeline.damage import find_damage
from docindex.pipeline.embedders import RequestLimits, build_embedder, plan_batches
from docindex.pipeline.embedders.local import LocalEmbedder
from docindex.pipeline.metadata import extract_metadata
from docindex.pipeline.parsing import (
    DocumentParser,
    ParseLimits,
    PipelineUnavailable,
    merge_parts,
    resolve_pdf_pipeline,
)

from .helpers import DATA, first_pages

SUFFIXES = {".pdf", ".docx", ".pptx", ".xlsx", ".xlsm", ".html"}
# Image-only pages: their parse leaves them to OCR (a step of its own); with OCR off they
# fail as EmptyDocument.
SCANNED = {
    "pdf/docling/ocr_test.pdf",
    "pdf/docling/ocr_test_rotated_90.pdf",
    "olmocr_bench/pdfs/blank_book_pg1.pdf",
    "olmocr_bench/pdfs/buildingnotes.pdf",
    "olmocr_bench/pdfs/lincoln_letter.pdf",
}


def documents(root: Path) -> list[str]:
    """Every document under ``root`` that must parse (broken/ holds those that must not)."""
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix.lower() in SUFFIXES and "broken" not in p.relative_to(root).parts
    )


VALID = documents(DATA)
# The development corpus, beside the checkout or named by DOCINDEX_CORPUS, holds many more
# documents than tests/data; each is parsed too where it is there, and skipped, saying so,
# where it is not (a clone on its own).
FULL = default_corpus()
EVERY = [pytest.param(DATA / n, n, id=n) for n in VALID] + (
    [pytest.param(FULL / n, n, id=f"corpus:{n}") for n in documents(FULL) if n not in VALID]
    if FULL.is_dir()
    else [
        pytest.param(
            None,
            "",
            id="corpus",
            marks=pytest.mark.skip(
                reason=f"no development corpus at {FULL} (set DOCINDEX_CORPUS to parse one)"
            ),
        )
    ]
)


@pytest.fixture(scope="module")
def parser() -> DocumentParser:
    return DocumentParser("auto")


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pdf/docling/multi_page.pdf", DocumentKind.PDF),
        ("office/docling/word_sample.docx", DocumentKind.DOCX),
        ("office/docling/powerpoint_sample.pptx", DocumentKind.PPTX),
        ("office/docling/xlsx_06_edge_cases_.xlsx", DocumentKind.XLSX),
        ("office/docling/xlsx_02_sample_sales_data.xlsm", DocumentKind.XLSX),
        ("office/docling/example_03.html", DocumentKind.HTML),
    ],
)
def test_kind_comes_from_the_bytes_not_the_name(corpus: Path, name: str, kind: DocumentKind):
    assert detect_kind((corpus / name).read_bytes(), "misleading.txt") is kind


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("broken/empty.pdf", EmptyDocument),
        ("broken/password_protected.xlsx", EncryptedDocument),
        ("broken/bug1606566.pdf", CorruptDocument),
    ],
)
def test_unreadable_containers_are_typed(corpus: Path, name: str, error: type[DocumentError]):
    with pytest.raises(error):
        detect_kind((corpus / name).read_bytes(), name)


def test_text_and_markdown_have_no_magic():
    assert detect_kind(b"# Title\n\nbody", "notes.md") is DocumentKind.MARKDOWN
    assert detect_kind(b"just words", "notes.pdf") is DocumentKind.TEXT
    assert detect_kind("caf\u00e9 ".encode() * 5000, "x") is DocumentKind.TEXT
    with pytest.raises(UnsupportedFormat):
        detect_kind(b"\x00\x01\x02\x03" * 100, "x.bin")


@pytest.mark.parametrize(("path", "name"), EVERY)
def test_every_valid_document_parses(parser: DocumentParser, path: Path, name: str):
    data = path.read_bytes()
    if name in SCANNED:
        with pytest.raises(EmptyDocument, match="OCR is off"):
            DocumentParser("native", ocr="off").parse(data, Path(name).name)
        assert parser.pages_to_ocr(parser.parse(data, Path(name).name).document)
        return
    parsed = parser.parse(data, Path(name).name)
    # A page whose text layer is unreadable (crazyones.pdf's, to Docling) waits for OCR.
    assert parsed.document.export_to_text().strip() or parser.pages_to_ocr(parsed.document)
    metadata = extract_metadata(parsed.document, parsed.kind.value, parsed.pipeline)
    assert metadata.pages == parsed.pages


# Every file of broken/ but the owner-password-only PDF, which must parse, with the typed
# error it must fail with and words its message must say (what is wrong, for a person).
OWNER_PASSWORD_ONLY = "broken/r4-owner-password.pdf"
BROKEN: dict[str, tuple[type[DocumentError], str]] = {
    "broken/empty.pdf": (EmptyDocument, "0 bytes"),
    "broken/r6-user-password.pdf": (EncryptedDocument, "password"),
    "broken/password_protected.xlsx": (EncryptedDocument, "password-protected"),
    "broken/GHOSTSCRIPT-698804-1-fuzzed.pdf": (EmptyDocument, "no text"),
    "broken/bug1606566.pdf": (CorruptDocument, "without a %PDF- header"),
    # Its page content stream's zlib trailer is wrong; pdfium ignores that and renders it.
    "broken/zen_of_python_corrupted.pdf": (CorruptDocument, "object 5 .* Adler-32 checksum"),
    # Docling reads its title, but a placeholder's geometry is inherited from nowhere.
    "broken/fake-power-point-malformed.pptx": (
        CorruptDocument,
        "slide 1, date placeholder 'Date Placeholder 3' .* no position or size",
    ),
}
# Damaged but readable: what a recovering parser must still get out of them.
RECOVERABLE = {
    "broken/zen_of_python_corrupted.pdf": "Beautiful is better than ugly.",
    "broken/fake-power-point-malformed.pptx": "Test Slide",
}


def test_every_broken_file_has_an_expected_outcome(corpus: Path):
    on_disk = {str(p.relative_to(corpus)) for p in (corpus / "broken").iterdir()}
    assert on_disk == {*BROKEN, OWNER_PASSWORD_ONLY}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_raise_typed_errors(parser: DocumentParser, corpus: Path, name: str):
    error, says = BROKEN[name]
    with pytest.raises(DocumentError, match=says) as caught:
        parser.parse((corpus / name).read_bytes(), Path(name).name)
    assert type(caught.value) is error


@pytest.mark.parametrize(("path", "name"), EVERY)
def test_damage_check_passes_every_valid_document(path: Path, name: str):
    data = path.read_bytes()
    assert find_damage(data, detect_kind(data, name)) is None


@pytest.fixture(scope="module")
def recovering_parser() -> DocumentParser:
    return DocumentParser("auto", recover_damaged=True)


@pytest.mark.parametrize("name", sorted(RECOVERABLE))
def test_recover_switch_indexes_damaged_files_and_says_so(
    recovering_parser: DocumentParser, corpus: Path, name: str
):
    data = (corpus / name).read_bytes()
    parsed = recovering_parser.parse(data, Path(name).name)
    assert RECOVERABLE[name] in parsed.document.export_to_text()
    # The note travels in the parsed artifact, which the metadata step reads back.
    stored = type(parsed.document).model_validate_json(parsed.document.model_dump_json())
    metadata = extract_metadata(stored, parsed.kind.value, parsed.pipeline)
    _, says = BROKEN[name]
    assert metadata.recovered and metadata.damage == parsed.damage
    assert re.search(says, metadata.damage or "")
    # Only the damage check is relaxed: other broken files still fail, typed.
    with pytest.raises(EncryptedDocument):
        recovering_parser.parse((corpus / "broken/r6-user-password.pdf").read_bytes(), "r6.pdf")


def test_recovered_page_ranges_keep_the_note_when_merged(
    recovering_parser: DocumentParser, parser: DocumentParser, corpus: Path
):
    data = (corpus / "broken/zen_of_python_corrupted.pdf").read_bytes()
    part = recovering_parser.parse(data, "zen.pdf", page_range=(1, 1))
    merged = merge_parts([part.document], "zen")
    assert extract_metadata(merged, "pdf", part.pipeline).recovered
    # A whole file recovered is a file whose metadata says nothing was wrong.
    whole = recovering_parser.parse(
        (corpus / "pdf/pypdf/crazyones.pdf").read_bytes(), "crazyones.pdf"
    )
    assert whole.damage is None
    assert not extract_metadata(whole.document, "pdf", whole.pipeline).recovered


def test_recover_switch_is_a_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DOCINDEX_RECOVER_DAMAGED_FILES", raising=False)
    assert Settings().recover_damaged_files is False  # strict unless asked
    monkeypatch.setenv("DOCINDEX_RECOVER_DAMAGED_FILES", "true")
    assert Settings().recover_damaged_files is True


def test_owner_password_only_pdf_parses(parser: DocumentParser, corpus: Path):
    parsed = parser.parse((corpus / OWNER_PASSWORD_ONLY).read_bytes(), "r4.pdf")
    assert parsed.document.export_to_text().strip()


def test_page_progress_is_reported(parser: DocumentParser, corpus: Path):
    seen: list[tuple[int, int]] = []
    parser.parse(
        (corpus / "pdf/docling/multi_page.pdf").read_bytes(),
        "m.pdf",
        lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (5, 5) and len(seen) == 5


def test_standard_pipeline_without_models_fails_fast(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DOCLING_ARTIFACTS_PATH", raising=False)
    with pytest.raises(PipelineUnavailable, match="DOCLING_ARTIFACTS_PATH"):
        resolve_pdf_pipeline("standard")
    assert resolve_pdf_pipeline("auto") == "native"


def test_chunks_respect_the_token_budget_and_keep_pages(parser: DocumentParser, corpus: Path):
    eighteen = first_pages(corpus / "pdf/pypdf_samples/GeoTopo-komprimiert.pdf", 18)
    parsed = parser.parse(eighteen, "g.pdf")
    chunker = DocumentChunker(max_tokens=128)
    chunks = chunker.chunk(parsed.document)
    assert len(chunks) > 10
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert max(chunker.count_tokens(c.embed_text) for c in chunks) <= 128
    assert len(chunker.chunk(parsed.document, max_tokens=64)) > len(chunks)
    assert all(c.pages and set(c.pages) <= set(range(1, 19)) for c in chunks)
    assert chunker.config_digest("a") != chunker.config_digest("b")


@pytest.mark.parametrize(
    ("name", "has_tables"),
    [
        ("pdf/pypdf_samples/GeoTopo-komprimiert.pdf", False),
        ("pdf/icdar2013/eu-015.pdf", True),
        ("office/docling/word_sample.docx", True),
        ("office/docling/xlsx_02_sample_sales_data.xlsm", True),
    ],
)
def test_chunks_are_those_of_doclings_own_hybrid_chunker(
    parser: DocumentParser, corpus: Path, name: str, has_tables: bool
):
    """Our chunker builds semchunk's splitter once per budget instead of once per chunk
    over budget, and counts tokens through the Rust tokenizer with a memo: the chunks must
    be exactly the stock HybridChunker's with the stock tokenizer, tables and their
    repeated headers included, and repeated chunking must leave nothing behind."""
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
    from docling_core.types.doc import TableItem
    from semchunk import semchunk

    path = corpus / name
    data = first_pages(path, 12) if "GeoTopo" in name else path.read_bytes()
    document = parser.parse(data, path.name).document
    ours, tables = DocumentChunker(max_tokens=128), 0
    for size in (24, 64, 128, 512):
        mine = ours._chunker(size)
        stock = HybridChunker(
            tokenizer=HuggingFaceTokenizer(tokenizer=ours._hf_tokenizer, max_tokens=size),
            merge_peers=True,
            repeat_table_header=True,
            serializer_provider=mine.serializer_provider,
        )
        expected = list(stock.chunk(document))
        assert [(c.text, mine.contextualize(c)) for c in mine.chunk(document)] == [
            (c.text, stock.contextualize(c)) for c in expected
        ]
        # The smallest budget splits every document's text and tables.
        assert size > 24 or len(expected) > 1
        tables += sum(isinstance(item, TableItem) for c in expected for item in c.meta.doc_items)
    assert bool(tables) == has_tables
    ours.chunk(document, max_tokens=24)
    kept = len(semchunk._memoized_token_counters)
    for _ in range(3):
        ours.chunk(document, max_tokens=24)
    assert len(semchunk._memoized_token_counters) == kept


async def test_local_embedder_is_normalised_and_semantic():
    embedder = build_embedder(spec.LocalEmbedder(), Settings(embed_device="cpu"))
    embedded = await embedder.embed_documents(
        ["The cat sat on the mat.", "A kitten rests on a rug.", "Quarterly revenue grew 8%."]
    )
    vectors = embedded.vectors
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedded.tokens > 10
    assert (await embedder.embed_documents([])).vectors.shape == (0, 384)


async def test_concurrent_requests_share_forward_passes():
    """Twelve documents embedding at once go through far fewer forward passes, and each
    gets exactly the vectors it would have got alone."""
    embedder = build_embedder(spec.LocalEmbedder(), Settings(embed_device="cpu"))
    assert isinstance(embedder, LocalEmbedder)
    docs = [[f"document {i} talks about topic {i}", f"and then {i} more"] for i in range(12)]
    alone = [embedder.encode(d) for d in docs]
    passes_before = embedder.batcher.stats.forward_passes
    together = await asyncio.gather(*(embedder.embed_documents(d) for d in docs))
    passes = embedder.batcher.stats.forward_passes - passes_before
    assert passes < 12 / 2, f"{passes} forward passes for 12 concurrent requests"
    assert embedder.batcher.stats.largest_batch >= 8
    for mine, reference in zip(together, alone, strict=True):
        assert np.allclose(mine.vectors, reference, atol=1e-5)


def test_a_local_model_on_cpu_uses_the_cores_it_may_or_the_threads_it_is_given():
    import os

    import torch

    from docindex.pipeline.embedders.local import LocalEmbedder, set_cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        LocalEmbedder(device="cpu")  # built afresh: build_embedder keeps one per process
        assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        assert set_cpu_threads(3) == 3 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_batches_respect_text_and_token_limits():
    texts = ["x" * 300] * 10  # ~101 estimated tokens each
    batches = plan_batches(texts, RequestLimits(max_texts=4, max_tokens=250))
    assert [len(b) for b in batches] == [2, 2, 2, 2, 2]
    batches = plan_batches(texts, RequestLimits(max_texts=3, max_tokens=10_000))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [i for b in batches for i in b] == list(range(10))
    # A text over the token budget on its own still goes, alone (the API truncates it).
    assert [len(b) for b in plan_batches(["y" * 3000, "z"], RequestLimits(10, 100))] == [1, 1]


def test_limits_are_typed_errors(corpus: Path):
    data = (corpus / "pdf/docling/multi_page.pdf").read_bytes()  # 5 pages
    with pytest.raises(TooLarge, match="5 pages exceeds the limit of 3"):
        DocumentParser("auto", limits=ParseLimits(max_pages=3)).parse(data, "m.pdf")
    with pytest.raises(TooLarge, match="bytes exceeds"):
        DocumentParser("auto", limits=ParseLimits(max_bytes=1000)).parse(data, "m.pdf")


def test_parse_time_budget_is_a_typed_error(corpus: Path):
    data = (corpus / "pdf/pypdf_samples/GeoTopo-komprimiert.pdf").read_bytes()
    hasty = DocumentParser("auto", limits=ParseLimits(time_budget_s=0.5))
    with pytest.raises(ParseTimeout, match="budget"):
        hasty.parse(data, "geotopo.pdf")
