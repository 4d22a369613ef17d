"""Enrichment with Anthropic: document metadata, and a situating context for each chunk.

Chunk contexts follow the contextual-retrieval recipe: the whole document goes in a block
marked ``cache_control`` so every chunk of one document reuses the cached prefix and pays
for the document once; the short context is prepended to the chunk before embedding.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from docindex.errors import (
    ProviderAuthError,
    ProviderRequestRejected,
    ProviderUnavailable,
    RateLimited,
)
from docindex.spec import AnthropicEnricher as AnthropicSpec
from docindex.spec import EnricherSpec
from docindex.steps.models import DocumentSummary
from docindex.usage import Usage

if TYPE_CHECKING:
    from docindex.config import Settings

DOCUMENT_PROMPT = (
    "Read the document above and describe it for a search index. Reply with one JSON "
    'object and nothing else, with the keys "title" (string), "summary" (two or three '
    'sentences), "document_type" (e.g. report, manual, paper, slides, spreadsheet, letter) '
    'and "keywords" (up to ten strings).'
)
CHUNK_PROMPT = (
    "Here is one passage from the document above:\n<passage>\n{chunk}\n</passage>\n"
    "Write one or two sentences that place this passage within the whole document (what "
    "it is part of, what it refers to), so that a search for it finds it. Reply with those "
    "sentences only."
)


class AnthropicEnricher:
    provider = "anthropic"

    def __init__(
        self,
        api_key: str,
        model: str,
        base_url: str | None = None,
        max_document_chars: int = 200_000,
        timeout_s: float = 300.0,
    ) -> None:
        import anthropic

        # max_retries=0: Temporal retries, honouring Retry-After, across worker restarts.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s
        )
        self.model = model
        self.max_document_chars = max_document_chars

    def document_block(self, text: str) -> dict[str, Any]:
        return {
            "type": "text",
            "text": f"<document>\n{text[: self.max_document_chars]}\n</document>",
            "cache_control": {"type": "ephemeral"},
        }

    async def describe_document(self, text: str) -> tuple[DocumentSummary, Usage]:
        reply, usage = await self._ask(
            [self.document_block(text), {"type": "text", "text": DOCUMENT_PROMPT}],
            max_tokens=600,
        )
        return parse_summary(reply), usage

    async def situate_chunk(self, document_text: str, chunk: str) -> tuple[str, Usage]:
        reply, usage = await self._ask(
            [
                self.document_block(document_text),
                {"type": "text", "text": CHUNK_PROMPT.format(chunk=chunk)},
            ],
            max_tokens=200,
        )
        return reply.strip(), usage

    async def _ask(self, content: list[dict[str, Any]], max_tokens: int) -> tuple[str, Usage]:
        try:
            message = await self._client.messages.create(
                model=self.model,
                max_tokens=max_tokens,
                messages=[{"role": "user", "content": content}],
            )
        except Exception as exc:
            raise _translate(exc) from exc
        # Only text blocks carry the answer; thinking and other block types are skipped.
        text = "".join(
            getattr(block, "text", "")
            for block in message.content
            if getattr(block, "type", None) == "text"
        )
        u = message.usage
        usage = Usage(
            provider=self.provider,
            model=self.model,
            requests=1,
            input_tokens=u.input_tokens or 0,
            output_tokens=u.output_tokens or 0,
            cache_write_tokens=getattr(u, "cache_creation_input_tokens", None) or 0,
            cache_read_tokens=getattr(u, "cache_read_input_tokens", None) or 0,
        )
        return text, usage


def build_enricher(spec: EnricherSpec, settings: Settings) -> AnthropicEnricher | None:
    """The enricher ``spec`` names, with this process's key and endpoint; None when the spec
    says none or this process has no key (the step is then recorded as skipped, not
    failed)."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else ""
    if not isinstance(spec, AnthropicSpec) or not key:
        return None
    return AnthropicEnricher(
        key,
        spec.model,
        settings.anthropic_base_url,
        max_document_chars=spec.document_chars,
    )


def parse_summary(reply: str) -> DocumentSummary:
    """The model's JSON, tolerating prose or code fences around it."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
            if isinstance(data, dict):
                keywords = data.get("keywords") or []
                return DocumentSummary(
                    title=_str(data.get("title")),
                    summary=_str(data.get("summary")),
                    document_type=_str(data.get("document_type")),
                    keywords=[str(k) for k in keywords][:10] if isinstance(keywords, list) else [],
                )
        except json.JSONDecodeError:
            pass
    return DocumentSummary(summary=reply.strip()[:1000] or None)


def _str(value: object) -> str | None:
    return str(value).strip() or None if value is not None else None


def _translate(exc: Exception) -> Exception:
    """Map SDK errors to typed provider errors that say whether retrying can help."""
    import anthropic

    if isinstance(exc, (anthropic.APITimeoutError, anthropic.APIConnectionError)):
        return ProviderUnavailable(f"Anthropic unreachable: {exc}")
    if not isinstance(exc, anthropic.APIStatusError):
        return exc
    status = exc.status_code
    retry_after = _retry_after(exc.response.headers)
    message = f"Anthropic {status}: {exc.message}"
    if status in (401, 403):
        return ProviderAuthError(f"{message} (check ANTHROPIC_API_KEY)")
    if status == 429:
        return RateLimited(message, retry_after_s=retry_after)
    if 400 <= status < 500:
        return ProviderRequestRejected(message)
    return ProviderUnavailable(message, retry_after_s=retry_after)  # 500, 529 overloaded


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
