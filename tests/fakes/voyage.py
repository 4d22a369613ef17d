"""A fake Voyage AI embeddings API, for driving the real ``voyageai`` SDK in tests.

Wire format as the SDK (voyageai 0.5) speaks it: ``POST {base_url}/embeddings`` and
``POST {base_url}/contextualizedembeddings`` with ``Authorization: Bearer <key>``; the SDK asks
for ``encoding_format: "base64"`` (little-endian float32 or the ``output_dtype``) unless told
otherwise. Errors are ``{"detail": "..."}``, which the SDK maps by status: 400
InvalidRequestError, 401 AuthenticationError, 429 RateLimitError, 500 ServerError, 502/503/504
ServiceUnavailableError.

Embeddings are deterministic: a text's vector is the normalised sum of one pseudo-random vector
per word (seeded by a hash of the word), so texts sharing words point the same way and search
ordering in tests means something. Vectors are made at 2048 dimensions and cut, as Voyage's
Matryoshka embeddings are: the 256-d vector is the normalised head of the 2048-d one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .server import FakeServer, Incoming, Reply, count_tokens, json_reply, token_spans

DEFAULT_API_KEY = "voyage-test-key"
_MAX_DIMENSION = 2048
_WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class VoyageModel:
    """Per-request limits and dimensions of one model, from Voyage's documentation."""

    max_texts: int = 1000  # texts per /embeddings call; documents per contextualized call
    max_total_tokens: int = 120_000  # tokens per call, after truncation
    context_length: int = 32_000  # tokens per text (per document when contextualized)
    dimensions: tuple[int, ...] = (256, 512, 1024, 2048)
    default_dimension: int = 1024
    contextualized: bool = False  # served by /contextualizedembeddings instead of /embeddings
    max_chunks: int = 16_000  # contextualized only: chunks across all documents in a call


DEFAULT_MODELS: Mapping[str, VoyageModel] = MappingProxyType(
    {
        "voyage-3.5": VoyageModel(max_total_tokens=320_000),
        "voyage-3.5-lite": VoyageModel(max_total_tokens=1_000_000),
        "voyage-3-large": VoyageModel(max_total_tokens=120_000),
        "voyage-code-3": VoyageModel(max_total_tokens=120_000),
        "voyage-4": VoyageModel(max_total_tokens=320_000),
        "voyage-4-lite": VoyageModel(max_total_tokens=1_000_000),
        "voyage-4-large": VoyageModel(max_total_tokens=120_000),
        "voyage-context-3": VoyageModel(max_total_tokens=120_000, contextualized=True),
        "voyage-context-4": VoyageModel(max_total_tokens=120_000, contextualized=True),
    }
)

INPUT_TYPES = (None, "query", "document")
OUTPUT_DTYPES = (None, "float", "int8", "uint8", "binary", "ubinary")


@functools.lru_cache(maxsize=65_536)
def _word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    vector = np.random.default_rng(seed).standard_normal(_MAX_DIMENSION, dtype=np.float32)
    vector.setflags(write=False)  # shared through the cache
    return vector


def _normalise(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def embed_text(text: str, dimension: int = 1024) -> np.ndarray:
    """The fake's embedding of ``text``: unit-length float32, ``dimension`` long.

    Tests can call this to know the vector the fake will return for a text (before any
    contextualisation or quantisation).
    """
    counts = Counter(w.lower() for w in _WORD_RE.findall(text)) or Counter({"<empty>": 1})
    words = list(counts)
    matrix = np.stack([_word_vector(w)[:dimension] for w in words])
    weights = np.asarray([counts[w] for w in words], dtype=np.float32)
    return _normalise(weights @ matrix).astype(np.float32)


def _encode(vector: np.ndarray, dtype: str | None, encoding_format: str | None) -> Any:
    """The embedding as the API sends it: a JSON list, or base64 of the raw little-endian array."""
    if dtype in (None, "float"):
        array: np.ndarray = vector.astype("<f4")
    elif dtype == "int8":
        array = np.clip(np.round(vector * 127), -128, 127).astype(np.int8)
    elif dtype == "uint8":
        array = np.clip(np.round(vector * 127) + 128, 0, 255).astype(np.uint8)
    else:
        # One bit per dimension (set when positive), 8 to a byte; "binary" is offset to int8.
        packed = np.packbits(vector > 0)
        array = packed if dtype == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    if encoding_format == "base64":
        return base64.b64encode(array.tobytes()).decode()
    return array.tolist()


class _Rejected(Exception):
    """A 400 from request validation, with Voyage's wording."""


class FakeVoyage(FakeServer):
    """Fake Voyage AI API. ``base_url`` already ends in ``/v1``, as the SDK expects.

    ``max_texts``, ``max_total_tokens`` and ``context_length``, when set (at construction or
    later, as attributes), override every model's limit so tests can hit them with small inputs.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        models: Mapping[str, VoyageModel] | None = None,
        max_texts: int | None = None,
        max_total_tokens: int | None = None,
        context_length: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.api_key = api_key
        self.models: dict[str, VoyageModel] = dict(DEFAULT_MODELS if models is None else models)
        self.max_texts = max_texts
        self.max_total_tokens = max_total_tokens
        self.context_length = context_length
        self._tokens_used = 0

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    @property
    def tokens_used(self) -> int:
        """Sum of ``usage.total_tokens`` over every successful call."""
        with self._lock:
            return self._tokens_used

    # -- wire format -------------------------------------------------------------------------

    def _error(self, status: int, message: str) -> Reply:
        return json_reply(status, {"detail": message})

    def _precheck(self, incoming: Incoming) -> Reply | None:
        auth = incoming.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return self._error(401, "No API key provided.")
        if auth.removeprefix("Bearer ") != self.api_key:
            return self._error(401, "Provided API key is invalid.")
        return None

    def _route(self, incoming: Incoming, body: Any) -> Reply:
        if incoming.method != "POST" or incoming.path not in (
            "/v1/embeddings",
            "/v1/contextualizedembeddings",
        ):
            return self._error(404, "Not Found")
        if not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON object.")
        try:
            if incoming.path == "/v1/embeddings":
                data, tokens = self._embeddings(body)
            else:
                data, tokens = self._contextualized(body)
        except _Rejected as exc:
            return self._error(400, str(exc))
        with self._lock:
            self._tokens_used += tokens
        reply: dict[str, Any] = {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"total_tokens": tokens},
        }
        if body.get("enable_auto_chunking"):
            reply["chunker_version"] = "fake-1"
        return json_reply(200, reply)

    # -- validation shared by both endpoints ---------------------------------------------------

    def _model(self, body: dict[str, Any], contextualized: bool) -> tuple[str, VoyageModel]:
        name = body.get("model")
        spec = self.models.get(name) if isinstance(name, str) else None
        if spec is None:
            raise _Rejected(
                f"Model {name} is not supported. Supported models are {sorted(self.models)}."
            )
        if spec.contextualized != contextualized:
            endpoint = "contextualizedembeddings" if spec.contextualized else "embeddings"
            raise _Rejected(f"Model {name} is only served by the /{endpoint} endpoint.")
        input_type = body.get("input_type")
        if input_type not in INPUT_TYPES:
            raise _Rejected(
                f"Value '{input_type}' for input_type is not supported. "
                "Supported values: None, 'query', 'document'."
            )
        if body.get("output_dtype") not in OUTPUT_DTYPES:
            raise _Rejected(f"Value '{body.get('output_dtype')}' for output_dtype is invalid.")
        if body.get("encoding_format") not in (None, "base64"):
            raise _Rejected(
                f"Value '{body.get('encoding_format')}' for encoding_format is invalid."
            )
        dimension = body.get("output_dimension")
        if dimension is not None and dimension not in spec.dimensions:
            raise _Rejected(
                f"Value {dimension} for output_dimension is not supported by {name}. "
                f"Supported values: {', '.join(map(str, spec.dimensions))}."
            )
        return name, spec

    def _limits(self, spec: VoyageModel) -> tuple[int, int, int]:
        return (
            self.max_texts if self.max_texts is not None else spec.max_texts,
            self.max_total_tokens if self.max_total_tokens is not None else spec.max_total_tokens,
            self.context_length if self.context_length is not None else spec.context_length,
        )

    @staticmethod
    def _dimension(body: dict[str, Any], spec: VoyageModel) -> int:
        return int(body.get("output_dimension") or spec.default_dimension)

    # -- /v1/embeddings ------------------------------------------------------------------------

    def _embeddings(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        name, spec = self._model(body, contextualized=False)
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise _Rejected("input must be a string or a non-empty list of strings.")
        max_texts, max_tokens, context = self._limits(spec)
        if len(texts) > max_texts:
            raise _Rejected(
                f"The batch size limit is {max_texts}. Your batch size is {len(texts)}."
            )
        truncation = body.get("truncation", True) is not False
        kept: list[str] = []
        for i, text in enumerate(texts):
            spans = token_spans(text)
            if len(spans) > context:
                if not truncation:
                    raise _Rejected(
                        f"Request to model '{name}' failed. The example at index {i} in your "
                        f"batch has {len(spans)} tokens, which is over the max context length "
                        f"of {context} tokens. Set truncation=True to truncate it."
                    )
                text = text[: spans[context - 1][1]]
            kept.append(text)
        tokens = sum(count_tokens(t) for t in kept)
        if tokens > max_tokens:
            raise _Rejected(
                f"Request to model '{name}' failed. The max allowed tokens per submitted batch "
                f"is {max_tokens}. Your batch has {tokens} tokens after truncation. "
                "Please lower the number of tokens in the batch."
            )
        dimension = self._dimension(body, spec)
        data = [
            {
                "object": "embedding",
                "embedding": _encode(
                    embed_text(text, dimension),
                    body.get("output_dtype"),
                    body.get("encoding_format"),
                ),
                "index": i,
            }
            for i, text in enumerate(kept)
        ]
        return data, tokens

    # -- /v1/contextualizedembeddings ----------------------------------------------------------

    def _contextualized(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        name, spec = self._model(body, contextualized=True)
        inputs = body.get("inputs")
        if (
            not isinstance(inputs, list)
            or not inputs
            or not all(
                isinstance(doc, list) and doc and all(isinstance(c, str) for c in doc)
                for doc in inputs
            )
        ):
            raise _Rejected("inputs must be a non-empty list of non-empty lists of strings.")
        max_docs, max_tokens, context = self._limits(spec)
        if len(inputs) > max_docs:
            raise _Rejected(
                f"The batch size limit is {max_docs}. Your batch size is {len(inputs)}."
            )
        auto = bool(body.get("enable_auto_chunking"))
        chunk_texts: list[list[str]] = (
            [self._auto_chunk(doc, body) for doc in inputs] if auto else inputs
        )
        chunks = sum(len(doc) for doc in chunk_texts)
        if chunks > spec.max_chunks:
            raise _Rejected(f"The total number of chunks is {chunks}, over {spec.max_chunks}.")
        tokens = 0
        for i, doc in enumerate(chunk_texts):
            doc_tokens = sum(count_tokens(c) for c in doc)
            if not auto and doc_tokens > context:
                raise _Rejected(
                    f"Request to model '{name}' failed. The input at index {i} has "
                    f"{doc_tokens} tokens, over the max context length of {context} tokens."
                )
            tokens += doc_tokens
        if tokens > max_tokens:
            raise _Rejected(
                f"Request to model '{name}' failed. The max allowed tokens per submitted batch "
                f"is {max_tokens}. Your batch has {tokens} tokens."
            )
        dimension = self._dimension(body, spec)
        data = [
            {
                "object": "list",
                "data": [
                    {
                        "object": "embedding",
                        "embedding": _encode(
                            vector, body.get("output_dtype"), body.get("encoding_format")
                        ),
                        "index": j,
                        **({"text": doc[j]} if auto else {}),
                    }
                    for j, vector in enumerate(self._contextual_vectors(doc, dimension))
                ],
                "index": i,
            }
            for i, doc in enumerate(chunk_texts)
        ]
        return data, tokens

    @staticmethod
    def _contextual_vectors(chunks: Sequence[str], dimension: int) -> list[np.ndarray]:
        # Each chunk leans towards its whole document, so chunks of one document are closer to
        # each other than to other documents; a lone chunk gets exactly its plain embedding.
        own = [embed_text(c, dimension) for c in chunks]
        document = _normalise(np.sum(own, axis=0))
        return [_normalise(v + 0.5 * document).astype(np.float32) for v in own]

    @staticmethod
    def _auto_chunk(doc: list[str], body: dict[str, Any]) -> list[str]:
        if len(doc) != 1:
            raise _Rejected("With enable_auto_chunking, each input must be one string.")
        size = int(body.get("chunk_size") or 512)
        overlap = int(body.get("chunk_overlap") or 0)
        if size < 1 or not 0 <= overlap < size:
            raise _Rejected("chunk_overlap must be at least 0 and less than chunk_size.")
        text = doc[0]
        spans = token_spans(text)
        if not spans:
            return [text]
        chunks = []
        start = 0
        while True:
            end = min(start + size, len(spans))
            chunks.append(text[spans[start][0] : spans[end - 1][1]])
            if end == len(spans):
                return chunks
            start = end - overlap


__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_MODELS",
    "FakeVoyage",
    "VoyageModel",
    "embed_text",
]
