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


class ResourceLimit(TooLarge):
    """Parsing went past the worker's memory or CPU-seconds limit (a bomb, or a document too
    heavy for this worker); the same bytes would again."""


class ParseKilled(Exception):
    """The process parsing the document died (a crash, a kill from outside) or stalled.
    Retryable: it may have been the machine, not the bytes; when every attempt ends this
    way the document fails with this type."""

    @property
    def error_type(self) -> str:
        return type(self).__name__


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
        ResourceLimit,
    )
)


class ProviderError(Exception):
    """A hosted API (Voyage, Anthropic) refused or failed a call.

    ``retryable`` and ``retry_after_s`` decide the Temporal retry: the SDKs' own retries are
    off, so a 429 waits exactly as long as the provider asked, across worker restarts.
    """

    retryable: bool = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def error_type(self) -> str:
        return type(self).__name__


class RateLimited(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    pass


class ProviderAuthError(ProviderError):
    retryable = False


class ProviderRequestRejected(ProviderError):
    retryable = False


PROVIDER_FINAL_ERROR_TYPES: tuple[str, ...] = ("ProviderAuthError", "ProviderRequestRejected")

# Error type of a quarantined document: every attempt of a step timed out on its heartbeat,
# i.e. the worker running it died (crash, OOM kill) or hung, attempt after attempt.
WORKER_LOST = "WorkerLost"
# A step that ran past its start-to-close timeout while its worker kept heartbeating: slow,
# not lost; failed rather than quarantined.
STEP_TIMED_OUT = "StepTimedOut"
# No worker took a step from its task queue within the queue deadline (a queue nobody
# polls, or a fleet scaled to zero).
QUEUE_UNSERVED = "QueueUnserved"
# The run's overall deadline passed before the document was indexed.
DEADLINE_EXCEEDED = "DeadlineExceeded"
