"""Recording files as a run without the upload's checks (benchmarks, tests); the caller
starts it with ``workflows.starter.start_run``."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable

import asyncpg

from docindex import repository
from docindex.blobstore import BlobStore
from docindex.ids import run_workflow_id
from docindex.spec import PipelineSpec


async def record_files(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    files: Iterable[tuple[str, bytes]],
    tenant_id: str = "default",
    spec: PipelineSpec | None = None,
) -> tuple[str, list[str]]:
    """Store the files and record them as one queued run, without an upload's checks and
    deduplication (benchmarks and tests; the caller starts the run). Returns the run id
    and the document ids, in order."""
    docs = []
    for name, data in files:
        key, sha, size = await blobs.put_upload(tenant_id, io.BytesIO(data))
        docs.append(
            repository.NewDocument(
                document_id=str(uuid.uuid4()),
                filename=name,
                sha256=sha,
                size_bytes=size,
                blob_key=key,
            )
        )
    run_id = str(uuid.uuid4())
    await repository.create_run(
        pool,
        run_id,
        run_workflow_id(run_id),
        docs,
        spec=spec or PipelineSpec(),
        tenant_id=tenant_id,
    )
    return run_id, [d.document_id for d in docs]
