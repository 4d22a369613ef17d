"""A model's own Rust tokenizer, called without transformers' Python around it.

For a GPU, the host has to tokenize a batch faster than the device embeds it. Through
sentence-transformers' ``preprocess``, most of a batch's host time is Python holding the GIL
(each token turned into a Python int, then into a tensor), so threads do not add up; the Rust
tokenizer itself lets go of the GIL. Used only where it gives the model exactly what its own
preprocessing gives (``DirectTokenizer.matching``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

# Texts that exercise what could differ: empty, padding, truncation past the model's
# length, accents, other scripts, a word too long for the vocabulary.
PROBE = [
    "",
    "a",
    "The cat sat on the mat.",
    "Ünïcödé façade — naïve café, 東京 and Ελληνικά, emoji 🙂!",
    "   leading and trailing whitespace   ",
    "x" * 500,
    " ".join(f"word{i} and more text" for i in range(400)),
]

_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class DirectTokenizer:
    """Features for a sentence-transformers text model, from a copy of its Rust tokenizer
    per thread, configured once with the padding and truncation its preprocessing uses."""

    def __init__(self, model: Any, tensors: Sequence[str], constants: dict[str, Any]) -> None:
        hf = model.tokenizer
        self._json = hf.backend_tokenizer.to_str()
        self._truncation = {
            "max_length": model.max_seq_length,
            "strategy": "longest_first",
            "direction": hf.truncation_side,
        }
        self._padding = {
            "pad_id": hf.pad_token_id,
            "pad_token": hf.pad_token,
            "pad_type_id": hf.pad_token_type_id,
            "direction": hf.padding_side,
        }
        self._tensors = tuple(tensors)
        self._constants = constants
        self._local = threading.local()

    @classmethod
    def matching(cls, model: Any) -> DirectTokenizer | None:
        """One that gives ``model`` the same features as ``model.preprocess`` on ``PROBE``,
        or None (a slow tokenizer, a model that adds more than token ids and masks, or any
        difference)."""
        import torch

        try:
            expected = model.preprocess(PROBE)
            tensors = [k for k, v in expected.items() if isinstance(v, torch.Tensor)]
            if not {"input_ids", "attention_mask"} <= set(tensors) <= set(_FIELDS):
                return None
            constants = {k: v for k, v in expected.items() if k not in tensors}
            direct = cls(model, tensors, constants)
            made = direct(PROBE)
        except (AttributeError, TypeError, ValueError):
            return None
        same = all(torch.equal(made[k], expected[k]) for k in tensors)
        return direct if same else None

    def _tokenizer(self) -> Any:
        tokenizer = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            from tokenizers import Tokenizer

            # A copy per thread: a tokenizer's settings are state that threads must not share.
            tokenizer = Tokenizer.from_str(self._json)
            tokenizer.enable_truncation(**self._truncation)
            tokenizer.enable_padding(**self._padding)
            self._local.tokenizer = tokenizer
        return tokenizer

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        import torch

        encodings = self._tokenizer().encode_batch(texts)
        made: dict[str, Any] = {
            key: torch.from_numpy(
                np.array([getattr(e, _FIELDS[key]) for e in encodings], dtype=np.int64)
            )
            for key in self._tensors
        }
        made.update(self._constants)
        return made
