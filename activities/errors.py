"""Turn typed document errors into non-retryable Temporal application errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from docindex.errors import DocumentError

P = ParamSpec("P")
R = TypeVar("R")


def document_errors_are_final(
    func: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except DocumentError as exc:
            raise ApplicationError(str(exc), type=exc.error_type, non_retryable=True) from exc

    return wrapper
