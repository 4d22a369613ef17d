"""The pipeline's parts built from a spec, once per process and kept by digest.

Building a parser loads Docling's pipelines and a chunker loads a tokenizer (seconds each),
so a worker builds each part the first time a run asks for it and reuses it for every later
run with the same spec. What the parts do comes from the spec; how this process runs them
(limits, device, keys) comes from its settings.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from docindex.config import Settings
from docindex.spec import ChunkerSpec, EmbedderSpec, EnricherSpec, ParserSpec

if TYPE_CHECKING:
    from docindex.pipeline.chunking import DocumentChunker
    from docindex.pipeline.embedders import Embedder
    from docindex.pipeline.enrichment import AnthropicEnricher
    from docindex.pipeline.parsing import DocumentParser, ParseLimits


class Components:
    def __init__(self, settings: Settings, limits: ParseLimits | None = None) -> None:
        self.settings = settings
        self.limits = limits
        self._parsers: dict[str, DocumentParser] = {}
        self._chunkers: dict[str, DocumentChunker] = {}
        # Steps build parts from threads (blocking work runs off the event loop).
        self._lock = threading.Lock()

    def parser(self, spec: ParserSpec) -> DocumentParser:
        from docindex.pipeline.parsing import DocumentParser, ParseLimits

        with self._lock:
            if spec.digest not in self._parsers:
                self._parsers[spec.digest] = DocumentParser(
                    spec.pdf_pipeline,
                    limits=self.limits or ParseLimits(),
                    ocr=spec.ocr,
                    table_structure=spec.table_structure,
                    tables=spec.tables,
                    recover_damaged=spec.recover_damaged,
                )
            return self._parsers[spec.digest]

    def chunker(self, spec: ChunkerSpec) -> DocumentChunker:
        from docindex.pipeline.chunking import DocumentChunker

        with self._lock:
            if spec.digest not in self._chunkers:
                self._chunkers[spec.digest] = DocumentChunker(spec.max_tokens)
            return self._chunkers[spec.digest]

    def embedder(self, spec: EmbedderSpec) -> Embedder:
        from docindex.pipeline.embedders import build_embedder

        return build_embedder(spec, self.settings)

    def enricher(self, spec: EnricherSpec) -> AnthropicEnricher | None:
        from docindex.pipeline.enrichment import build_enricher

        return build_enricher(spec, self.settings)
