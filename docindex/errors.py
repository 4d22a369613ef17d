"""Typed errors for input that can never be indexed.

Each class name is the ``type`` of the non-retryable Temporal ``ApplicationError`` the
activity raises, so an operator can filter on it and a retry storm never starts.
"""

from __future__ import annotations


class DocumentError(Exception):
    """The document itself is the problem; retrying the same bytes cannot help."""

    @property
    def error_type(self) -> str:
        return type(self).__name__


class EmptyDocument(DocumentError):
    pass


class UnsupportedFormat(DocumentError):
    pass


class CorruptDocument(DocumentError):
    pass


class EncryptedDocument(DocumentError):
    pass


class TooLarge(DocumentError):
    """Over a configured limit (bytes or pages)."""


class ParseTimeout(DocumentError):
    """Parsing exceeded its time budget; the same bytes would exceed it again."""


DOCUMENT_ERROR_TYPES: tuple[str, ...] = tuple(
    cls.__name__
    for cls in (
        DocumentError,
        EmptyDocument,
        UnsupportedFormat,
        CorruptDocument,
        EncryptedDocument,
        TooLarge,
        ParseTimeout,
    )
)
