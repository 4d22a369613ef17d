"""Request and response bodies of the public API.

They are defined in ``docindex.api_models`` (``docindex.client`` parses answers into the
same classes, and may not import ``api``); this module re-exports them for the routes and
adds what only the server needs."""

from __future__ import annotations

from typing import Any

from docindex.api_models import (
    AcceptedDocument,
    BulkRetry,
    BulkRetryAccepted,
    DocumentDetail,
    DocumentItem,
    DocumentPage,
    DocumentStatus,
    EvalQuery,
    EvalScores,
    EvalSetRequest,
    EvalSetSummary,
    GenerationAccepted,
    GenerationDetail,
    GenerationList,
    GenerationRequest,
    Problem,
    PromoteRequest,
    PromoteResult,
    PromotionGate,
    RetryAccepted,
    RetryBody,
    RunItem,
    RunPage,
    RunStatus,
    SearchHit,
    SearchRequest,
    SearchResponse,
    UploadAccepted,
)

__all__ = [
    "AcceptedDocument",
    "BulkRetry",
    "BulkRetryAccepted",
    "DocumentDetail",
    "DocumentItem",
    "DocumentPage",
    "DocumentStatus",
    "EvalQuery",
    "EvalScores",
    "EvalSetRequest",
    "EvalSetSummary",
    "GenerationAccepted",
    "GenerationDetail",
    "GenerationList",
    "GenerationRequest",
    "Problem",
    "PromoteRequest",
    "PromoteResult",
    "PromotionGate",
    "RetryAccepted",
    "RetryBody",
    "RunItem",
    "RunPage",
    "RunStatus",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "UploadAccepted",
    "problems",
]


def invalid(where: tuple[str | int, ...], message: str, value: Any = None) -> Exception:
    """A 422 shaped like FastAPI's own validation errors (the schema every route documents
    for 422), for what only the route can judge (a cursor, a URL it will not read)."""
    from fastapi.exceptions import RequestValidationError

    return RequestValidationError(
        [{"type": "value_error", "loc": where, "msg": message, "input": value}]
    )


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses."""
    reasons = {
        401: "No API key, or an unknown or revoked one",
        404: "No such run or document for this tenant",
        409: "Not possible in the current state",
        429: "Too many requests for this key; see Retry-After",
        502: "The embedding provider refused the request",
        503: "A backing service (Temporal, Postgres, a provider) is unavailable; retry",
    }
    return {code: {"model": Problem, "description": reasons[code]} for code in codes}
