"""Voyage AI embeddings through the official SDK, with Temporal doing the retrying."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from docindex.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRequestRejected,
    ProviderUnavailable,
    RateLimited,
)

from .base import Embedded, Embedder, RequestLimits

# Per-request limits from Voyage's documentation (texts, tokens), by model family.
_LIMITS: dict[str, RequestLimits] = {
    "voyage-3.5-lite": RequestLimits(1000, 1_000_000),
    "voyage-3.5": RequestLimits(1000, 320_000),
    "voyage-3-large": RequestLimits(1000, 120_000),
    "voyage-code-3": RequestLimits(1000, 120_000),
    "voyage-context-3": RequestLimits(1000, 120_000),
}
_DEFAULT_DIMENSION = 1024


def limits_for(model: str) -> RequestLimits:
    for prefix in sorted(_LIMITS, key=len, reverse=True):
        if model.startswith(prefix):
            return _LIMITS[prefix]
    return RequestLimits(1000, 120_000)


class VoyageEmbedder(Embedder):
    provider = "voyage"

    def __init__(
        self,
        api_key: str,
        model: str = "voyage-3.5",
        output_dimension: int | None = None,
        base_url: str | None = None,
        limits: RequestLimits | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        import voyageai

        if not api_key:
            raise ProviderAuthError("VOYAGE_API_KEY is not set")
        # max_retries=0: the SDK's retries count attempts and ignore Retry-After; a failed
        # call goes back to Temporal, which waits as long as Voyage asked.
        self._client = voyageai.AsyncClient(
            api_key=api_key, max_retries=0, timeout=timeout_s, base_url=base_url
        )
        self.api_model = model
        self.output_dimension = output_dimension
        self.dimension = output_dimension or _DEFAULT_DIMENSION
        self.model = (
            model
            if output_dimension in (None, _DEFAULT_DIMENSION)
            else (f"{model}@{output_dimension}")
        )
        self.limits = limits or limits_for(model)
        self.contextual = model.startswith("voyage-context")

    async def embed_documents(self, texts: Sequence[str]) -> Embedded:
        if self.contextual and texts:
            # One document's chunks embedded together, each aware of its neighbours.
            vectors, tokens = await self._call_contextual(list(texts))
            return Embedded(vectors, tokens, 1)
        return await super().embed_documents(texts)

    async def _embed(self, texts: list[str], input_type: str) -> tuple[np.ndarray, int]:
        if self.contextual:
            vectors, tokens = await self._call_contextual([[t] for t in texts], input_type)
            return vectors, tokens
        try:
            result = await self._client.embed(
                texts,
                model=self.api_model,
                input_type=input_type,
                output_dimension=self.output_dimension,
                truncation=True,
            )
        except Exception as exc:
            raise _translate(exc) from exc
        return np.asarray(result.embeddings, dtype=np.float32), int(result.total_tokens)

    async def _call_contextual(
        self, inputs: list, input_type: str = "document"
    ) -> tuple[np.ndarray, int]:
        if inputs and isinstance(inputs[0], str):
            inputs = [inputs]
        try:
            result = await self._client.contextualized_embed(
                inputs=inputs,
                model=self.api_model,
                input_type=input_type,
                output_dimension=self.output_dimension,
            )
        except Exception as exc:
            raise _translate(exc) from exc
        vectors = [e for r in result.results for e in r.embeddings]
        return np.asarray(vectors, dtype=np.float32), int(result.total_tokens)


def _translate(exc: Exception) -> Exception:
    """Map SDK errors to typed provider errors that say whether retrying can help."""
    import voyageai.error as verr

    if not isinstance(exc, verr.VoyageError):
        if isinstance(exc, (TimeoutError, ConnectionError, OSError)):
            return ProviderUnavailable(f"Voyage unreachable: {exc}")
        return exc
    message = f"Voyage: {exc.user_message or exc}"
    retry_after = _retry_after(exc.headers)
    if isinstance(exc, verr.AuthenticationError) or exc.http_status in (401, 403):
        return ProviderAuthError(f"{message} (check VOYAGE_API_KEY)")
    if isinstance(exc, verr.RateLimitError) or exc.http_status == 429:
        return RateLimited(message, retry_after_s=retry_after)
    if isinstance(exc, (verr.InvalidRequestError, verr.MalformedRequestError)) or (
        exc.http_status is not None and 400 <= exc.http_status < 500
    ):
        return ProviderRequestRejected(message)
    return ProviderUnavailable(message, retry_after_s=retry_after)


def _retry_after(headers: object) -> float | None:
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")  # type: ignore[attr-defined]
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None


__all__ = ["ProviderError", "VoyageEmbedder", "limits_for"]
