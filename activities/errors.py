"""Turn typed document errors into non-retryable Temporal application errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import wraps
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from docindex.errors import DocumentError, ProviderError

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


def provider_errors_are_typed(
    func: Callable[P, Awaitable[R]],
) -> Callable[P, Awaitable[R]]:
    """A hosted API's refusal becomes an application error Temporal can act on: retry after
    the provider's Retry-After, or stop at once when retrying cannot help (a bad key)."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await func(*args, **kwargs)
        except ProviderError as exc:
            raise ApplicationError(
                str(exc),
                type=exc.error_type,
                non_retryable=not exc.retryable,
                next_retry_delay=(
                    timedelta(seconds=exc.retry_after_s) if exc.retry_after_s else None
                ),
            ) from exc

    return wrapper
