"""Workflow activations without a payload walk when nothing would change a payload.

For every activation and every completion, temporalio (1.35) walks the whole message three
times (codec, external storage, storage references) and, for each payload sequence, asks the
workflow's sandbox for a serialization context. With no payload codec and no external
storage each step returns the payloads as they are: the walk is pure cost, about a tenth of
the workflow worker's CPU on a tiny document (docs/benchmarks.md, figure 4). Here the walk
is skipped when the data converter has neither; with either, the SDK's own functions run.
Nothing of the sandbox changes.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import temporalio.bridge.worker as bridge
from temporalio.converter import DataConverter
from temporalio.converter._extstore import StorageOperationMetrics

_Walk = Callable[..., Awaitable[StorageOperationMetrics]]


def has_effect(data_converter: DataConverter) -> bool:
    """Whether a walk could change a payload: a codec or external storage is configured."""
    return data_converter.payload_codec is not None or data_converter.external_storage is not None


def _skip_without_effect(walk: _Walk) -> _Walk:
    if getattr(walk, "__wrapped__", None) is not None:
        return walk  # installed already

    @functools.wraps(walk)
    async def maybe_walk(
        message: Any, data_converter: DataConverter, *args: Any, **kwargs: Any
    ) -> StorageOperationMetrics:
        if not has_effect(data_converter):
            return StorageOperationMetrics()
        return await walk(message, data_converter, *args, **kwargs)

    return maybe_walk


def skip_payload_walks() -> None:
    """Install the short cut for this process's workflow workers (they look the functions
    up on the module at each activation)."""
    bridge.decode_activation = _skip_without_effect(bridge.decode_activation)
    bridge.encode_completion = _skip_without_effect(bridge.encode_completion)
