"""All configuration in one place: environment variables prefixed ``DOCINDEX_``.

Every external endpoint is optional. Left unset, ``docindex dev`` starts an embedded
equivalent (Temporal dev server, pgserver Postgres, a local blob directory) under
``data_dir``; set, the real endpoint is used and nothing is started for it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from docindex.archives import ArchiveLimits
from docindex.build_id import workflow_build_id

# USD per million tokens. Estimates for cost reporting; override with DOCINDEX_PRICES.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "voyage-3.5": {"embedding": 0.06},
    "voyage-3.5-lite": {"embedding": 0.02},
    "voyage-3-large": {"embedding": 0.18},
    "voyage-context-3": {"embedding": 0.18},
    "claude-haiku-4-5": {"input": 1.00, "output": 5.00, "cache_write": 1.25, "cache_read": 0.10},
    "claude-sonnet-4-5": {"input": 3.00, "output": 15.00, "cache_write": 3.75, "cache_read": 0.30},
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOCINDEX_", env_file=".env", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Field(
        default=Path(".docindex"),
        description="Where embedded services keep their state (Temporal DB, pgdata, blobs).",
    )

    # Temporal
    temporal_address: str | None = Field(
        default=None, description="host:port of a Temporal frontend; unset = embedded dev server"
    )
    temporal_namespace: str = "default"
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    workflow_task_queue: str = "docindex-workflows"
    cpu_task_queue: str = "docindex-cpu"
    gpu_task_queue: str = "docindex-gpu"
    # Worker Versioning (docs/operations.md, "Rolling out a workflow change")
    deployment_name: str = Field(
        default="docindex",
        description="Temporal Worker Deployment every docindex worker belongs to",
    )
    build_id: str = Field(
        default_factory=workflow_build_id,
        min_length=1,
        description="This worker's version in the deployment; default: a hash of the code that "
        "defines workflow behaviour (docindex/build_id.py), so a changed workflow is a new build",
    )

    # Postgres + pgvector
    database_url: str | None = Field(
        default=None, description="postgresql:// URL; unset = embedded pgserver under data_dir"
    )

    # Blob store
    blob_url: str | None = Field(
        default=None,
        description="file:///abs/dir or s3://bucket/prefix; unset = data_dir/blobs",
    )

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_url: str | None = Field(
        default=None, description="Base URL the CLI talks to; default http://api_host:api_port"
    )
    max_upload_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1, description="Largest file accepted by upload"
    )
    max_request_bytes: int = Field(
        default=1024 * 1024 * 1024,
        ge=1,
        description="Largest upload request; counted while it streams in, refused past it",
    )
    max_json_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="Largest body of any other request (search, retry...); counted while it "
        "streams in, refused (413) past it",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A request body that is not all in after this long is refused (408): a "
        "client trickling bytes in cannot hold a connection",
    )
    upload_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="The same deadline for an upload's body (1 GiB in 15 min is 1.2 MB/s)",
    )
    bad_key_rate_limit: str = Field(
        default="30/minute",
        description="Requests with an unknown, revoked or malformed key per client address "
        "('limits' notation); past it 429, and keys it presents are no longer looked up",
    )
    upload_memory_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=0,
        description="Bytes of its files one upload request holds in memory; a file over "
        "1 MiB, and every file past this, streams into the blob store as it arrives",
    )
    max_files_per_request: int = Field(
        default=1000,
        ge=1,
        le=1000,
        description="Files in one upload (at most 1000; more are refused, 413); bigger sets "
        "go in several uploads",
    )
    allowed_types: list[str] = Field(
        default_factory=lambda: ["pdf", "docx", "pptx", "xlsx", "html", "md", "txt"],
        description="Formats accepted at upload (JSON list); files recognised by their bytes "
        "as anything else (executables, images, archives...) get 415",
    )
    rate_limit: str = Field(
        default="600/minute",
        description="Requests per API key ('limits' notation, e.g. '10/second;600/minute')",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where rate-limit counters live; redis://... shares them between replicas",
    )
    tenant_max_active_runs: int = Field(
        default=50, ge=1, description="Runs a tenant may have queued or running at once"
    )
    tenant_max_documents_in_flight: int = Field(
        default=20_000, ge=1, description="Documents a tenant may have queued or running at once"
    )
    tenant_max_stored_bytes: int = Field(
        default=100 * 1024**3,
        ge=1,
        description="Bytes of uploaded files a tenant may keep (its documents' distinct "
        "contents); an upload that would pass it is refused (413) before it is stored",
    )
    dev_tenant: str = Field(
        default="dev", description="Tenant whose key `docindex dev` creates for local tools"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="Key the CLI sends; unset = the key `docindex dev` wrote under data_dir",
    )
    metrics_port: int | None = Field(
        default=None, description="A worker serves Prometheus metrics on this port when set"
    )

    # Orchestration
    max_concurrent_documents: int = Field(
        default=8,
        ge=1,
        description="Sliding window of children per run (a DocumentWorkflow, or a batch of "
        "small documents)",
    )
    documents_per_run_execution: int = Field(
        default=200,
        ge=1,
        description="Documents started before the run continues-as-new (keeps history small)",
    )
    batch_documents: int = Field(
        default=16,
        ge=1,
        description="Small documents of a big run indexed together by one batch workflow "
        "(1: a workflow per document always); a document the batch cannot index gets its own",
    )
    batch_document_bytes: int = Field(
        default=64 * 1024, ge=0, description="Documents up to this size may go in a batch"
    )
    batch_min_run_documents: int = Field(
        default=100,
        ge=1,
        description="Runs with fewer documents index each in its own workflow",
    )
    side_by_side_min_run_documents: int = Field(
        default=32,
        ge=1,
        description="Runs of at least this many documents index their documents that are not "
        "small enough for a batch side by side, batch_documents to a workflow, each through "
        "its own steps; fewer: a workflow per document",
    )
    side_by_side_parallel: int = Field(
        default=2,
        ge=1,
        description="Documents a side-by-side batch indexes at once, each a slot of the run's "
        "window (max_concurrent_documents)",
    )
    cpu_worker_concurrency: int = Field(default=2, ge=1)
    gpu_worker_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Embed activities at once on the GPU worker; unset = 128 when the local "
        "model is on CUDA (the micro-batcher needs many requests to fill a GPU: bench figure "
        "10), else 4",
    )

    # What a document becomes: read where a run is created (the API, index-local) and
    # resolved into the run's pipeline spec (docindex/spec.py). A worker's own values of
    # these never change a run: parser, chunker, embedder and enricher options below.

    # Parsing
    pdf_pipeline: Literal["auto", "standard", "native"] = Field(
        default="auto",
        description="standard = Docling layout models from DOCLING_ARTIFACTS_PATH; native = "
        "model-free; auto = standard when the models are there, else native",
    )
    ocr: Literal["auto", "off", "force"] = Field(
        default="auto",
        validation_alias=AliasChoices("DOCINDEX_OCR", "DOCINDEX_PDF_OCR", "ocr"),
        description="PDF pages with ink and no readable text are OCRed (auto), every page is "
        "(force), or none is (off: such pages are reported empty or unreadable). "
        "DOCINDEX_PDF_OCR=true/false, its former name, means auto/off",
    )
    pdf_table_structure: bool = Field(
        default=True, description="Table structure model in the standard PDF pipeline"
    )
    pdf_tables: bool = Field(
        default=True,
        description="Ruled tables (drawn with lines) kept as tables by the native PDF pipeline",
    )
    # Unset: by PDF pipeline (docindex/pagination.py): 200 / 100 / 50 pages on the native
    # pipeline, 20 / 20 / 5 on the model pipeline, which is some 20 times slower a page.
    split_pdf_pages: int | None = Field(
        default=None,
        ge=1,
        description="PDFs with more pages are parsed as page ranges (default: by pipeline)",
    )
    range_pages: int | None = Field(
        default=None, ge=1, description="Pages per page-range activity (default: by pipeline)"
    )
    max_parallel_ranges: int = Field(
        default=4, ge=1, description="Page ranges of one document parsed at the same time"
    )
    parse_checkpoint_pages: int | None = Field(
        default=None,
        ge=1,
        description="A page range saves its progress every this many pages (default: by pipeline)",
    )
    heartbeat_timeout_s: float = Field(
        default=30.0, gt=0, description="A worker silent this long is presumed dead"
    )
    document_deadline_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="A document not indexed within this ends failed (TimedOut)",
    )
    run_deadline_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="A run still going after this stops its unfinished documents "
        "(cancelled, DeadlineExceeded)",
    )
    queue_deadline_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description="A step that no worker takes from its queue within this fails its "
        "document (QueueUnserved): a queue nobody polls does not hold documents forever",
    )
    max_document_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_document_pages: int = Field(default=2000, ge=1)
    parse_timeout_s: float = Field(
        default=3600.0, gt=0, description="Time budget of one parse call (document or range)"
    )
    recover_damaged_files: bool = Field(
        default=False,
        description="Index damaged files (a PDF stream failing its checksum, a PPTX "
        "placeholder with no geometry) as far as they parse, noting the damage in the "
        "document's metadata; false = fail them as CorruptDocument",
    )

    # The parse cage (docindex/cage.py): a CPU worker's limits on one document's parse
    parse_processes: int | None = Field(
        default=None,
        ge=1,
        description="Child processes that parse (and OCR); unset = the worker's concurrency",
    )
    parse_memory_bytes: int = Field(
        default=6 * 1024**3,
        ge=512 * 1024**2,
        description="Address space of a parse process (RLIMIT_AS; Docling alone maps ~1.3 GB); "
        "a parse past it fails as ResourceLimit",
    )
    parse_cpu_s: float = Field(
        default=900.0,
        gt=0,
        description="CPU seconds one parse call may use (RLIMIT_CPU); past it ResourceLimit",
    )
    max_document_chunks: int = Field(
        default=20_000, ge=1, description="Chunks of one document; past it TooLarge"
    )
    pdf_max_stream_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="A PDF stream inflating past this is a decompression bomb: TooLarge",
    )
    archive_max_entries: int = Field(
        default=10_000,
        ge=1,
        description="Entries of a DOCX/PPTX/XLSX (ZIP), checked at upload and before parsing",
    )
    archive_max_uncompressed_bytes: int = Field(
        default=1024**3, ge=1, description="What a DOCX/PPTX/XLSX's entries inflate to, at most"
    )
    archive_max_ratio: float = Field(
        default=200.0, gt=1, description="Inflation ratio of one entry of 1 MiB or more, at most"
    )

    # Faults and poison documents (docs/operations.md, "Faults and poison documents")
    poison_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Parse attempts that may lose their worker (crash, OOM kill, hang) before "
        "the document is quarantined; as many again on the large queue when one is set",
    )
    large_task_queue: str = Field(
        default="",
        description="Task queue of `docindex worker --queue large` (bigger limits, one document "
        "at a time); empty = none: poison documents are quarantined at once",
    )
    large_document_bytes: int = Field(
        default=0, ge=0, description="Documents this big or bigger go to the large queue; 0 = off"
    )
    large_worker_concurrency: int = Field(default=1, ge=1)
    large_max_document_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1)
    large_max_document_pages: int = Field(default=20000, ge=1)
    worker_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Niceness the CPU, large and GPU workers (and their parse processes) add "
        "to their own at start: parsing and embedding, which can wait, yield the cores to what "
        "someone waits on when they share a machine (the API answering an upload, the workflow "
        "worker and Temporal moving documents along). 0 = as started",
    )
    worker_graceful_shutdown_s: float = Field(
        default=20.0,
        ge=0,
        description="On SIGTERM a worker stops polling and lets running activities finish this "
        "long; then it cancels them and Temporal retries them on another worker at once",
    )

    # Garbage collection of the blob store (docindex/gc.py)
    gc_interval_s: float = Field(
        default=3600.0,
        gt=0,
        description="How often the GC schedule sweeps the blob store for what nothing holds",
    )
    gc_grace_s: float = Field(
        default=3600.0,
        ge=0,
        description="The sweep spares objects younger than this: an upload's bytes and "
        "password, stored a moment before its documents are recorded, are never looked at",
    )

    # Sources that sync themselves (docindex/sources.py, POST /v1/sources)
    source_file_root: Path | None = Field(
        default=None,
        description="The only folder file:// sources may name (they must lie under it); "
        "unset = file:// sources are refused, so a tenant cannot read the server's files",
    )
    source_min_interval_s: float = Field(
        default=60.0, gt=0, description="The shortest interval_s a source may ask for"
    )
    source_run_documents: int = Field(
        default=200,
        ge=1,
        le=1000,
        description="Documents of one run a source's sync records at most (a first sync of "
        "a big prefix is many runs, started as the tenant's quotas allow)",
    )
    source_quota_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a sync waits before trying again when the tenant is at its "
        "limit of active runs or documents in flight (it waits, it does not fail)",
    )

    # Chunking / embedding
    embedder: Literal["local", "voyage"] = "local"
    embed_micro_batch: int | None = Field(
        default=None,
        ge=1,
        description="Local model: most texts coalesced into one forward pass; unset = 1024 on "
        "CUDA, 256 on CPU",
    )
    embed_micro_batch_wait_ms: float | None = Field(
        default=None,
        ge=0,
        description="Local model: how long a request waits for company; default 20 on CUDA, "
        "0 on CPU (a CPU is saturated by one request's batch: waiting only adds latency)",
    )
    voyage_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("VOYAGE_API_KEY", "DOCINDEX_VOYAGE_API_KEY")
    )
    voyage_model: str = "voyage-3.5"
    voyage_output_dimension: int | None = None
    voyage_max_texts_per_request: int | None = Field(
        default=None, ge=1, description="Override the model's documented per-request limit"
    )
    voyage_max_tokens_per_request: int | None = Field(default=None, ge=1)
    voyage_base_url: str | None = Field(
        default=None, description="Voyage endpoint override (a proxy, or a test server)"
    )
    embed_model: str | None = Field(
        default=None,
        description="unset = bundled all-MiniLM-L6-v2 (English); multilingual-e5-small = "
        "the bundled multilingual model (docindex[multilingual]); else the path of a "
        "sentence-transformers model",
    )
    embed_batch_size: int = 64
    chunk_max_tokens: int = Field(default=256, ge=16)
    embed_device: str | None = Field(
        default=None, description="torch device; unset = cuda when present, else cpu"
    )
    embed_cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description="Local model on CPU: torch's intra-op threads; unset = one per core this "
        "process may use. Fewer stall less when other work shares the cores, but embed a "
        "corpus on fewer cores",
    )

    # Enrichment
    enricher: Literal["none", "anthropic"] = "none"
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "DOCINDEX_ANTHROPIC_API_KEY"),
    )
    anthropic_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "DOCINDEX_ANTHROPIC_BASE_URL"),
    )
    enrich_model: str = "claude-haiku-4-5"
    contextual_chunks: bool = Field(
        default=True, description="Anthropic contextual retrieval: a situating context per chunk"
    )
    context_chunks_per_activity: int = Field(
        default=8, ge=1, description="Chunks contextualised per activity (one call each)"
    )
    enrich_document_chars: int = Field(
        default=200_000, ge=1000, description="Document text sent to the LLM is cut here"
    )

    # Hosted APIs run on their own task queues, rate-limited for all workers together.
    llm_task_queue: str = "docindex-llm"
    embed_api_task_queue: str = "docindex-embed-api"
    anthropic_requests_per_second: float = Field(default=5.0, gt=0)
    voyage_requests_per_second: float = Field(default=5.0, gt=0)
    prices: dict[str, dict[str, float]] = Field(
        default_factory=lambda: dict(DEFAULT_PRICES),
        description="USD per million tokens, by model; JSON in DOCINDEX_PRICES",
    )

    # Webhooks (POST /v1/webhooks): each delivery retried with backoff until its time is up.
    webhook_allow_private_urls: bool = Field(
        default=False,
        description="Let webhooks reach private, loopback and link-local addresses (tests, "
        "a receiver on the same network); off, such URLs are refused (SSRF)",
    )
    webhook_retry_initial_s: float = Field(default=5.0, gt=0)
    webhook_retry_max_interval_s: float = Field(default=600.0, gt=0)
    webhook_max_age_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long a delivery is retried, from its event"
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="One attempt's time limit")

    @field_validator("ocr", mode="before")
    @classmethod
    def _ocr_switch(cls, value: object) -> object:
        """DOCINDEX_PDF_OCR was a switch of the standard pipeline: true/false are auto/off."""
        if isinstance(value, bool):
            return "auto" if value else "off"
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
            return "auto"
        if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
            return "off"
        return value

    @field_validator("build_id", mode="before")
    @classmethod
    def _derived_build_id(cls, value: object) -> object:
        """An empty DOCINDEX_BUILD_ID (the compose file's default) means the derived one."""
        return value or workflow_build_id()

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def dev_api_key_file(self) -> Path:
        return self.data_dir / "dev-api-key"

    @property
    def blob_root(self) -> Path:
        return (self.data_dir / "blobs").resolve()

    @property
    def archive_limits(self) -> ArchiveLimits:
        return ArchiveLimits(
            max_entries=self.archive_max_entries,
            max_uncompressed_bytes=self.archive_max_uncompressed_bytes,
            max_ratio=self.archive_max_ratio,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
