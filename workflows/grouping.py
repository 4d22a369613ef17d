"""How a run indexes, and a generation's build derives, its documents: in lock-step batches,
side-by-side batches, or a workflow each. One policy for both, so a document goes the same
way whichever of them takes it (docs/decisions.md, "Small documents of a big run go in
batches" and "A run of many documents goes side by side in batches")."""

from __future__ import annotations

from .options import RunOptions


def batch_size(opts: RunOptions, total: int, llm_enriched: bool) -> int:
    """Documents per batch among ``total``; 1: a workflow per document. A few documents
    keep a workflow each (each one's history is worth its cost there); so does an LLM
    enricher, whose calls per document and chunk cost far more than a child workflow and
    want their own retries and rate limit."""
    if total < min(opts.batch_min_run_documents, opts.side_by_side_min_run_documents):
        return 1
    if llm_enriched:
        return 1
    return max(opts.batch_documents, 1)


def grouping(opts: RunOptions, total: int, llm_enriched: bool, size_bytes: int) -> bool | None:
    """How a document of ``size_bytes`` goes among ``total``: in a lock-step batch
    (False), in a side-by-side one (True), or in a workflow of its own (None)."""
    big = 0 < opts.large_document_bytes <= size_bytes
    if batch_size(opts, total, llm_enriched) == 1 or big:
        return None
    if size_bytes <= opts.batch_document_bytes and total >= opts.batch_min_run_documents:
        return False
    if total >= opts.side_by_side_min_run_documents:
        return True
    return None


def weight(opts: RunOptions, side_by_side: bool) -> int:
    """Window slots a batch takes: a lock-step batch one (its small documents take each
    step together, as one); a side-by-side batch as many as it indexes at once."""
    return min(opts.side_by_side_parallel, opts.max_concurrent_documents) if side_by_side else 1


def group_size(opts: RunOptions, total: int, llm_enriched: bool, side_by_side: bool) -> int:
    """Documents per batch: batch_documents; side by side, fewer where that fills the
    window with more batches (40 documents: four of ten, not 16, 16, 8)."""
    size = batch_size(opts, total, llm_enriched)
    if not side_by_side:
        return size
    batches = max(opts.max_concurrent_documents // weight(opts, True), 1)
    return max(min(size, -(-total // batches)), 2)
