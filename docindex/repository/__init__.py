"""Every SQL statement docindex runs, one module per aggregate, returning typed rows.

``runs``: runs and their pipeline spec; ``documents``: a run's documents and their
outcomes; ``chunks``: stored chunks and search; ``keys``: tenants and API keys. Each
function takes a pool, or a connection to join a caller's transaction.
"""

from ._db import Db, transaction
from .chunks import (
    ChunkHit,
    ChunkRow,
    SearchFilters,
    SearchMode,
    ensure_vector_index,
    explain_search,
    filename_regex,
    search_chunks,
    store_document,
    vector_index_name,
)
from .documents import (
    DocumentRow,
    NewDocument,
    cancel_queued_documents,
    count_run_documents,
    delete_document,
    fetch_documents,
    get_document,
    indexed_documents,
    list_run_documents,
    record_outcome,
    requeue_documents,
    runs_with_failures,
)
from .keys import KeyRow, active_key, insert_key, list_keys, revoke_key
from .runs import (
    RunRow,
    active_runs,
    create_run,
    get_run,
    lock_tenant_runs,
    resumable_runs,
    run_by_idempotency_key,
    set_run_status,
)

__all__ = [
    "ChunkHit",
    "ChunkRow",
    "Db",
    "DocumentRow",
    "KeyRow",
    "NewDocument",
    "RunRow",
    "SearchFilters",
    "SearchMode",
    "active_key",
    "active_runs",
    "cancel_queued_documents",
    "count_run_documents",
    "create_run",
    "delete_document",
    "ensure_vector_index",
    "explain_search",
    "fetch_documents",
    "filename_regex",
    "get_document",
    "get_run",
    "indexed_documents",
    "insert_key",
    "list_keys",
    "list_run_documents",
    "lock_tenant_runs",
    "record_outcome",
    "requeue_documents",
    "resumable_runs",
    "revoke_key",
    "run_by_idempotency_key",
    "runs_with_failures",
    "search_chunks",
    "set_run_status",
    "store_document",
    "transaction",
    "vector_index_name",
]
