"""How a run is orchestrated, shared by the run and its documents."""

from __future__ import annotations

from pydantic import BaseModel


class RunOptions(BaseModel):
    """How a run is orchestrated (queues, windows, timeouts): never what a document becomes,
    which is the run's ``PipelineSpec``. Workflows must not read the environment (it breaks
    replay), so whatever they need of the settings travels here."""

    # Defaults match docindex.config, so an operator can start a retry from the temporal
    # CLI with only {"run_id": ..., "retry_only": true} as input.
    cpu_task_queue: str = "docindex-cpu"
    gpu_task_queue: str = "docindex-gpu"
    workflow_task_queue: str = "docindex-workflows"
    llm_task_queue: str = "docindex-llm"
    embed_api_task_queue: str = "docindex-embed-api"
    max_concurrent_documents: int = 8
    documents_per_execution: int = 200
    # Small documents of a big run go through their steps together, this many to a batch
    # workflow (workflows/batch.py): documents of at most batch_document_bytes, in runs of
    # at least batch_min_run_documents documents, with no LLM enrichment. 1 turns it off.
    batch_documents: int = 16
    batch_document_bytes: int = 64 * 1024
    batch_min_run_documents: int = 100
    # Runs of at least this many documents put their other documents (bigger, or all in a
    # run under batch_min_run_documents) in side-by-side batches of batch_documents: each
    # document through its own steps, none waiting for another, one workflow for them all.
    # Documents of large_document_bytes or more always get a workflow of their own.
    side_by_side_min_run_documents: int = 32
    # Documents a side-by-side batch indexes at once; it takes as many of the run's
    # max_concurrent_documents, so the window still bounds the documents in flight.
    side_by_side_parallel: int = 2
    # Page ranges of one big PDF parsed at the same time.
    max_parallel_ranges: int = 4
    # How soon a dead or hung worker is noticed on a long step.
    heartbeat_timeout_s: float = 30.0
    # Poison documents: parse attempts (per queue) before a document whose parse keeps
    # losing its worker is quarantined; with a large queue set, it gets as many more there.
    # Documents of large_document_bytes or more go to the large queue from the start.
    poison_max_attempts: int = 3
    large_task_queue: str = ""
    large_document_bytes: int = 0
    # Overall deadlines: a document's (then TimedOut), a run's (its unfinished documents are
    # stopped), and a step's wait for a worker to take it from its queue (QueueUnserved).
    document_deadline_s: float = 24 * 3600.0
    run_deadline_s: float = 7 * 24 * 3600.0
    queue_deadline_s: float = 6 * 3600.0
