"""What each step takes and returns. Small: documents, chunks and vectors stay in the blob
store and only their keys travel (through workflow history, when a workflow runs them).

Every input carries the part of the run's pipeline spec its step applies, so the step does
the same thing on whichever worker runs it."""

from __future__ import annotations

from pydantic import BaseModel, Field

from docindex.models import DocumentTask
from docindex.pagination import page_ranges
from docindex.spec import (
    AnthropicEnricher,
    ChunkerSpec,
    EmbedderSpec,
    EnricherSpec,
    ParserSpec,
    PipelineSpec,
)
from docindex.usage import Usage, combine


class DocumentRef(BaseModel):
    """Which document, whose, and where its bytes are."""

    document_id: str
    # Every artifact of the document is keyed under its tenant: nothing is shared (or
    # reused) across tenants, so reuse reveals nothing of another tenant's uploads.
    tenant_id: str
    filename: str
    sha256: str
    blob_key: str
    # The password itself never enters workflow history; it waits in the blob store.
    password_key: str | None = None

    @classmethod
    def of(cls, task: DocumentTask) -> DocumentRef:
        return cls(
            document_id=task.document_id,
            tenant_id=task.tenant_id,
            filename=task.filename,
            sha256=task.sha256,
            blob_key=task.blob_key,
            password_key=task.password_key,
        )


class Inspected(BaseModel):
    kind: str
    pages: int | None
    pipeline: str


class Parsed(BaseModel):
    parsed_key: str
    kind: str
    pages: int | None  # None for formats without pages (DOCX, HTML, Markdown)
    pipeline: str
    # An earlier run's artifact was found and nothing was parsed again.
    reused: bool = False


class PageQuality(BaseModel):
    """What became of each page of a PDF: its text layer indexed (``text``), OCRed
    (``ocr``), a text layer of glyph garbage not indexed (``unreadable``), or no text at all
    (``empty``, blank pages included). Pages not indexed are named in ``warning``."""

    pages: int
    text: int = 0
    ocr: int = 0
    unreadable: int = 0
    empty: int = 0
    empty_pages: list[int] = Field(default_factory=list)
    blank_pages: list[int] = Field(default_factory=list)
    unreadable_pages: list[int] = Field(default_factory=list)
    tables: int = 0
    warning: str | None = None


class DocumentMetadata(BaseModel):
    title: str | None = None
    kind: str
    pages: int | None
    pipeline: str
    headings: list[str] = Field(default_factory=list)
    tables: int = 0
    pictures: int = 0
    text_items: int = 0
    # The file was damaged and indexed anyway (the parser spec's recover_damaged): its text
    # may be incomplete or wrong. ``damage`` says what was damaged.
    recovered: bool = False
    damage: str | None = None
    # PDFs: what became of each page (None for other formats).
    quality: PageQuality | None = None


class Chunked(BaseModel):
    chunks_key: str
    chunk_count: int
    chunk_config: str
    reused: bool = False


class PrepareInput(BaseModel):
    """Inspect, then (unless it is a PDF to split into page ranges) parse, describe and
    chunk: one step for most documents."""

    document: DocumentRef
    parser: ParserSpec
    chunker: ChunkerSpec


class Prepared(BaseModel):
    inspected: Inspected
    # All None when the PDF is to be split: its page ranges are parsed as steps of their own.
    parsed: Parsed | None = None
    metadata: DocumentMetadata | None = None
    chunked: Chunked | None = None
    # Pages to OCR first: ``parsed`` is then the text layer's parse, and metadata and chunks
    # come from the step that adds the OCR text (``apply_ocr``).
    ocr_pages: list[int] = Field(default_factory=list)


class OcrInput(BaseModel):
    """OCR some pages of a PDF (a batch of the pages that need it)."""

    document: DocumentRef
    parser: ParserSpec
    pages: list[int]


class OcrResult(BaseModel):
    ocr_key: str
    pages: int
    lines: int
    seconds: float = 0.0
    reused: bool = False


class ApplyOcrInput(BaseModel):
    """The text layer's parse plus the OCR of its pages, described and chunked."""

    document: DocumentRef
    parser: ParserSpec
    chunker: ChunkerSpec
    parsed: Parsed
    ocr_keys: list[str]


class PageRangeInput(BaseModel):
    document: DocumentRef
    parser: ParserSpec
    first_page: int
    last_page: int


class PageRangeResult(BaseModel):
    part_keys: list[str]
    pages_parsed: int
    # Pages found already parsed by an earlier attempt (resumed, not parsed again).
    pages_reused: int


class MergeInput(BaseModel):
    """A split PDF's parts, merged, then described and chunked like a whole document."""

    document: DocumentRef
    parser: ParserSpec
    chunker: ChunkerSpec
    part_keys: list[str]


class DocumentSummary(BaseModel):
    """What the LLM says about a whole document."""

    title: str | None = None
    summary: str | None = None
    document_type: str | None = None
    keywords: list[str] = Field(default_factory=list)


class EnrichInput(BaseModel):
    tenant_id: str
    sha256: str
    parsed_key: str
    enricher: EnricherSpec


class Enriched(BaseModel):
    status: str  # "skipped" | "enriched"
    enricher: str
    reason: str | None = None
    summary: DocumentSummary | None = None
    # The document text the chunk contexts are written against (cached prompt prefix).
    document_text_key: str | None = None
    usage: list[Usage] = Field(default_factory=list)
    reused: bool = False

    def context_inputs(
        self, tenant_id: str, sha256: str, enricher: AnthropicEnricher, chunked: Chunked
    ) -> list[ContextInput]:
        """The chunks to situate, a batch per step; none when the document was not enriched
        or the spec asks for no chunk contexts."""
        if (
            self.status != "enriched"
            or not enricher.contextual_chunks
            or not chunked.chunk_count
            or self.document_text_key is None
        ):
            return []
        return [
            ContextInput(
                tenant_id=tenant_id,
                sha256=sha256,
                enricher=enricher,
                document_text_key=self.document_text_key,
                chunks_key=chunked.chunks_key,
                chunk_config=chunked.chunk_config,
                first=first,
                last=last,
            )
            for first, last in page_ranges(
                0, chunked.chunk_count - 1, enricher.context_chunks_per_activity
            )
        ]


class ContextInput(BaseModel):
    tenant_id: str
    sha256: str
    enricher: EnricherSpec
    document_text_key: str
    chunks_key: str
    chunk_config: str
    first: int  # chunk ordinals, inclusive
    last: int


class Contexts(BaseModel):
    contexts_key: str
    usage: list[Usage] = Field(default_factory=list)


class EmbedInput(BaseModel):
    tenant_id: str
    sha256: str
    embedder: EmbedderSpec
    chunks_key: str
    chunk_config: str
    contexts_keys: list[str] = Field(default_factory=list)


class Embedded(BaseModel):
    vectors_key: str
    model: str
    dimension: int
    count: int
    usage: Usage | None = None
    reused: bool = False


class StoreInput(BaseModel):
    document_id: str
    chunks_key: str
    chunk_config: str
    vectors_key: str
    model: str
    dimension: int
    pages: int | None
    metadata: DocumentMetadata
    contexts_keys: list[str] = Field(default_factory=list)
    summary: DocumentSummary | None = None
    enrichment_status: str = "skipped"
    enrichment_reason: str | None = None
    usage: list[Usage] = Field(default_factory=list)
    # The index generation to store into; None: the tenant's active one.
    generation_id: str | None = None
    # A generation being built from an indexed document: the document's own row (status,
    # metadata) is left as it is, and nothing else is derived from this store.
    derive: bool = False

    @classmethod
    def of(
        cls,
        document_id: str,
        prepared: Prepared,
        enriched: Enriched | None,
        contexts: list[Contexts],
        embedded: Embedded,
        *,
        generation_id: str | None = None,
        derive: bool = False,
    ) -> StoreInput:
        """What the earlier steps of one document hand to the store step."""
        assert prepared.chunked is not None and prepared.metadata is not None
        return cls(
            generation_id=generation_id,
            derive=derive,
            document_id=document_id,
            chunks_key=prepared.chunked.chunks_key,
            chunk_config=prepared.chunked.chunk_config,
            vectors_key=embedded.vectors_key,
            model=embedded.model,
            dimension=embedded.dimension,
            pages=prepared.parsed.pages if prepared.parsed else None,
            metadata=prepared.metadata,
            contexts_keys=[c.contexts_key for c in contexts],
            summary=enriched.summary if enriched else None,
            enrichment_status=enriched.status if enriched else "skipped",
            enrichment_reason=enriched.reason if enriched else "disabled by the run's pipeline",
            # One entry per provider and model, however many steps reported usage: the
            # store's input stays small for a document of thousands of chunks.
            usage=list(
                combine(
                    [
                        *(enriched.usage if enriched else []),
                        *(u for c in contexts for u in c.usage),
                        *([embedded.usage] if embedded.usage else []),
                    ]
                ).values()
            ),
        )


class DeriveTarget(BaseModel):
    """Another live generation of the document's tenant, which must have it too."""

    generation_id: str
    spec: PipelineSpec


class Stored(BaseModel):
    chunk_count: int
    generation_id: str | None = None
    derive_into: list[DeriveTarget] = Field(default_factory=list)


# Several small documents taken through a step together (workflows/batch.py). A document a
# batch step could not take further is not failed there: it is listed under ``handed_back``
# with why, and its own DocumentWorkflow takes it from the start, with the retries, typed
# outcome and quarantine every document gets.


class HandedBack(BaseModel):
    error_type: str
    error: str


class PrepareBatchInput(BaseModel):
    items: list[PrepareInput]


class PreparedBatch(BaseModel):
    prepared: dict[str, Prepared] = Field(default_factory=dict)
    handed_back: dict[str, HandedBack] = Field(default_factory=dict)


class EmbedBatchInput(BaseModel):
    # By document id.
    items: dict[str, EmbedInput]


class EmbeddedBatch(BaseModel):
    embedded: dict[str, Embedded] = Field(default_factory=dict)
    handed_back: dict[str, HandedBack] = Field(default_factory=dict)


class StoreBatchInput(BaseModel):
    items: list[StoreInput]


class StoredBatch(BaseModel):
    stored: dict[str, Stored] = Field(default_factory=dict)
    handed_back: dict[str, HandedBack] = Field(default_factory=dict)
