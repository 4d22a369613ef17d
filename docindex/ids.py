"""Deterministic identifiers, so retries and replays never create duplicates."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

_NAMESPACE = uuid.UUID("6f1c1d2e-55a4-4c47-9a53-3b8e1f0c9d21")


def run_workflow_id(run_id: str) -> str:
    return f"index-run/{run_id}"


def document_workflow_id(run_id: str, document_id: str) -> str:
    return f"index-doc/{run_id}/{document_id}"


def batch_workflow_id(run_id: str, first_document_id: str) -> str:
    """A batch of a run's small documents, named by its first (a document is the first of
    at most one batch: what a batch hands back gets a workflow of its own)."""
    return f"index-batch/{run_id}/{first_document_id}"


def config_digest(config: dict[str, Any]) -> str:
    """Short stable digest of a step's configuration, used in artifact keys and chunk ids."""
    raw = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def chunk_id(
    document_id: str, ordinal: int, chunk_config: str, model: str, generation_id: str
) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{document_id}:{ordinal}:{chunk_config}:{model}:{generation_id}")


def generation_workflow_id(tenant_id: str, generation_id: str) -> str:
    return f"index-gen/{tenant_id}/{generation_id}"


def derive_workflow_id(generation_id: str, document_id: str) -> str:
    return f"index-derive/{generation_id}/{document_id}"


def derive_batch_workflow_id(generation_id: str, first_document_id: str) -> str:
    """A batch of small documents derived into a generation, named by its first (the build
    walks its documents once, in order)."""
    return f"index-derive-batch/{generation_id}/{first_document_id}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
