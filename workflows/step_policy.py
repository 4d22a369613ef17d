"""How each step of a document is run (time limit, retries, how it shows it is alive) and
the DocStatus it shows. Its own module, imported passed through the sandbox: the sandbox
runs a workflow's module afresh for every workflow, and making this dataclass alone took
half of running ``workflows/document.py`` (0.56 of 1.1 ms per document)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.common import RetryPolicy

from activities.bookkeeping import Bookkeeping
from activities.embedding import EmbeddingActivities
from activities.enrichment import EnrichmentActivities
from activities.parsing import ParseActivities
from activities.storing import StoreActivities
from docindex.errors import DOCUMENT_ERROR_TYPES, PROVIDER_FINAL_ERROR_TYPES
from docindex.models import Step

# Transient failures (a worker restart, a database blip) retry with backoff; bad input does
# not retry at all (the activities raise it non-retryable, and the types are listed here too).
STEP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=10,
    non_retryable_error_types=list(DOCUMENT_ERROR_TYPES),
)

# Hosted APIs: rate limits and outages retry for a long while (a 429 waits as long as the
# provider's Retry-After says); a bad key or a rejected request stops at once.
PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=30,
    non_retryable_error_types=list(PROVIDER_FINAL_ERROR_TYPES),
)

# Storing needs Postgres: an outage of up to about half an hour is waited out rather than
# failing every document that reached this step meanwhile.
STORE_RETRY = dataclasses.replace(STEP_RETRY, maximum_attempts=30)

# A step of a batch of small documents (workflows/batch.py) tries twice, then hands its
# documents to workflows of their own, which retry each as long as STEP_RETRY says and
# quarantine the one that keeps killing its worker.
BATCH_RETRY = dataclasses.replace(STEP_RETRY, maximum_attempts=2)

# The run's bookkeeping waits for Postgres indefinitely.
BOOKKEEPING_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))

# A step's event (the live stream) is not worth holding a document up for: a few tries.
EVENT_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=5), maximum_attempts=3)


@dataclasses.dataclass(frozen=True)
class StepPolicy:
    """How one step is run: its time limit, its retries, how it shows it is alive."""

    timeout: timedelta
    retry: RetryPolicy
    # Steps that run Docling on untrusted bytes: a document that kills or hangs its worker
    # times out on every attempt, and after the run's poison_max_attempts it is quarantined
    # instead of crash-looping the fleet.
    poison: bool = False
    # Heartbeat timeout: the run's, or at least this (an LLM call can be slow to answer).
    min_heartbeat: timedelta = timedelta(0)
    heartbeats: bool = True
    # Postgres I/O on the workflow worker, in the workflow task that needs it: no queue.
    local: bool = False


STEPS: dict[Callable[..., Any], StepPolicy] = {
    ParseActivities.prepare_document: StepPolicy(timedelta(hours=2), STEP_RETRY, poison=True),
    ParseActivities.parse_page_range: StepPolicy(timedelta(hours=2), STEP_RETRY, poison=True),
    ParseActivities.merge_parsed_parts: StepPolicy(timedelta(minutes=30), STEP_RETRY, poison=True),
    ParseActivities.ocr_pages: StepPolicy(timedelta(hours=1), STEP_RETRY, poison=True),
    ParseActivities.apply_ocr: StepPolicy(timedelta(minutes=30), STEP_RETRY, poison=True),
    EnrichmentActivities.enrich_document: StepPolicy(
        timedelta(minutes=15), PROVIDER_RETRY, min_heartbeat=timedelta(seconds=60)
    ),
    EnrichmentActivities.contextualize_chunks: StepPolicy(
        timedelta(minutes=30), PROVIDER_RETRY, min_heartbeat=timedelta(seconds=60)
    ),
    EmbeddingActivities.embed_chunks: StepPolicy(timedelta(hours=1), PROVIDER_RETRY),
    StoreActivities.store_document: StepPolicy(timedelta(minutes=10), STORE_RETRY, local=True),
    ParseActivities.prepare_documents: StepPolicy(timedelta(minutes=30), BATCH_RETRY),
    EmbeddingActivities.embed_documents: StepPolicy(timedelta(hours=1), PROVIDER_RETRY),
    StoreActivities.store_documents: StepPolicy(timedelta(minutes=10), STORE_RETRY, local=True),
    Bookkeeping.record_document_outcomes: StepPolicy(
        timedelta(minutes=1), BOOKKEEPING_RETRY, heartbeats=False
    ),
    Bookkeeping.record_document_events: StepPolicy(
        timedelta(seconds=30), EVENT_RETRY, heartbeats=False, local=True
    ),
    Bookkeeping.record_document_outcome: StepPolicy(
        timedelta(minutes=1), BOOKKEEPING_RETRY, heartbeats=False
    ),
    Bookkeeping.record_document_event: StepPolicy(
        timedelta(seconds=10), EVENT_RETRY, heartbeats=False, local=True
    ),
}

# DocStatus search attribute while a document is in a step. A child starts with its first
# step's (its parent sets it), so it takes no upsert of its own. The store has none: it runs
# in the workflow task that completes the document, so a "storing" would never be seen.
STEP_STATUS = {
    Step.PARSE: "parsing",
    Step.OCR: "ocr",
    Step.ENRICH: "enriching",
    Step.EMBED: "embedding",
}
FIRST_STATUS = STEP_STATUS[Step.PARSE]
