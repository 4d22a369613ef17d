"""Fake Voyage AI and Anthropic HTTP APIs on 127.0.0.1, for tests that drive the real SDKs.

Each fake runs in a background thread (``with FakeVoyage() as voyage: ...``) and speaks the
provider's wire format, so the SDK's own request building, response parsing and error mapping
are exercised; ``tests/test_fakes.py`` proves each fake against its SDK.
"""

from .anthropic import FakeAnthropic, Responder, ResponderError, default_responder, last_user_text
from .server import FakeServer, RecordedRequest, count_tokens
from .voyage import FakeVoyage, VoyageModel, embed_text

__all__ = [
    "FakeAnthropic",
    "FakeServer",
    "FakeVoyage",
    "RecordedRequest",
    "Responder",
    "ResponderError",
    "VoyageModel",
    "count_tokens",
    "default_responder",
    "embed_text",
    "last_user_text",
]
