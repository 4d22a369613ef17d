"""Enrichment step. With no LLM configured it passes through and says so."""

from __future__ import annotations

from docindex.models import EnrichResult


def enrich(enricher: str) -> EnrichResult:
    if enricher == "none":
        return EnrichResult(status="skipped", enricher="none")
    raise ValueError(f"enricher {enricher!r} is not available in this build")
