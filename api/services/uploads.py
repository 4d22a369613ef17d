"""The upload use case: check the files, store their bytes, record one run of the new ones with
the pipeline spec they will be indexed with, and start its workflow.

The body was read once (``incoming``): each file hashed and scanned as it arrived, a big one
streamed to a staging key of its request. Nothing becomes an upload before the files are
known to be formats docindex indexes (by their bytes) and the tenant is known to be within
its quotas (active runs, documents in flight, stored bytes). Everything that decides what an
upload becomes (a repeat of an Idempotency-Key, files the tenant already uploaded, its
quotas) is then read and written again in a transaction under the tenant's run lock, so two
uploads at once decide one after another; uploads of one tenant that arrive together share
that transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from temporalio.service import RPCError

from docindex import intake, repository
from docindex.auth import Principal
from docindex.blobstore import BlobStore, password_key, upload_key
from docindex.config import Settings
from docindex.filetypes import ZIP_MAGIC
from docindex.gc import restore_uploads
from docindex.ids import run_workflow_id
from docindex.intake import StorageQuotaExceeded as StorageQuotaExceeded
from docindex.intake import TooManyActiveRuns as TooManyActiveRuns
from docindex.intake import TooManyDocumentsInFlight as TooManyDocumentsInFlight
from docindex.repository import DocumentRow, NewDocument, RunRow
from docindex.repository.quotas import tenant_usage
from docindex.spec import PipelineSpec
from docindex.telemetry import current_trace_id
from docindex.upload_check import RefusedUpload, judge
from workflows.starter import start_run

from ..deps import Resources
from ..routes.metrics import DOCUMENTS_ACCEPTED, UPLOAD_BYTES, UPLOADS
from ..schemas import AcceptedDocument, UploadAccepted
from .incoming import FileTooLarge as FileTooLarge
from .incoming import MalformedUpload as MalformedUpload
from .incoming import NotAFormField as NotAFormField
from .incoming import ReceivedFile, ReceivedUpload
from .incoming import TooManyFiles as TooManyFiles

log = logging.getLogger(__name__)


# The upload is refused as a whole; nothing of it was recorded. The quota refusals are the
# ones a source's sync meets too (docindex/intake.py).
UploadRefused = intake.Refused


class UnsupportedFile(UploadRefused):
    pass


class IdempotencyKeyReused(UploadRefused):
    pass


async def upload_documents(
    res: Resources,
    principal: Principal,
    received: ReceivedUpload,
    idempotency_key: str | None = None,
) -> UploadAccepted:
    """Store the files durably, record the new ones as a run and start its workflow.

    The answer has one entry per file, in upload order; ``run_id`` is None when every file
    was already uploaded by this tenant. Raises an ``UploadRefused`` before anything is
    stored for files over the limits or of a refused format, for a reused Idempotency-Key,
    or for a tenant that would pass one of its quotas."""
    settings = res.settings
    tenant = principal.tenant_id
    files, password = received.files, received.password
    digests, sizes = await _check(res, files)
    fingerprint = hashlib.sha256("\n".join([*digests, str(bool(password))]).encode()).hexdigest()
    # Everything read before the bytes are stored, on one pooled connection.
    async with res.pool.acquire() as conn:
        prior = (
            await repository.run_by_idempotency_key(conn, tenant, idempotency_key)
            if idempotency_key is not None
            else None
        )
        if prior is None:
            # A tenant at a quota stores nothing. Checked again with the run recorded,
            # under the tenant's lock: two uploads at once may both pass here, never both
            # there.
            existing = await repository.indexed_documents(conn, tenant, digests)
            fresh = {d: sizes[d] for d in digests if d not in existing}
            if fresh:
                usage = await tenant_usage(conn, tenant, list(fresh))
                intake.within_quotas(settings, tenant, usage, fresh)
            spec, generation_id = await intake.run_spec(conn, settings, tenant)
    if prior is not None:
        return await _replay(res, prior, fingerprint, digests, tenant)

    # The bytes go first, outside the transaction: they are stored under their digest, so
    # bytes of an upload that is then refused or deduplicated cost space, never correctness.
    run_id = str(uuid.uuid4())
    secret_key = None
    if password:
        # In the blob store, not in Postgres rows or workflow history (the UI shows those).
        secret_key = password_key(tenant, run_id)
        await res.blobs.put(secret_key, password.encode())
    candidates: dict[str, NewDocument] = {}
    for upload in files:
        if upload.sha256 not in candidates:
            key = upload_key(tenant, upload.sha256)
            await _store(res.blobs, upload, key, if_new=True)
            candidates[upload.sha256] = NewDocument(
                document_id=str(uuid.uuid4()),
                filename=upload.filename,
                sha256=upload.sha256,
                size_bytes=upload.size,
                blob_key=key,
                password_key=secret_key,
            )

    trace_id = current_trace_id()
    try:
        prior, existing, new = await _RECORDER.record(
            res,
            tenant,
            _NewRun(
                run_id=run_id,
                digests=digests,
                candidates=candidates,
                spec=spec,
                trace_id=trace_id,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                generation_id=generation_id,
            ),
        )
    except UploadRefused:
        await _forget_password(res, secret_key)
        raise
    if not new:
        await _forget_password(res, secret_key)
        if prior is not None:
            return await _replay(res, prior, fingerprint, digests, tenant)
        return _answer(None, digests, new, existing, trace_id)

    # Our rows hold the bytes now; a collection that ran before they did may have taken
    # bytes we found stored (docindex/gc.py): store those again before anything reads them.
    by_digest = {f.sha256: f for f in files}

    async def store_again(sha256: str, key: str) -> None:
        await _store(res.blobs, by_digest[sha256], key, if_new=False)

    await restore_uploads(res.blobs, tenant, {d: n.blob_key for d, n in new.items()}, store_again)
    documents = list(new.values())
    UPLOADS.inc()
    DOCUMENTS_ACCEPTED.inc(len(documents))
    UPLOAD_BYTES.inc(sum(d.size_bytes for d in documents))
    try:
        await start_run(
            res.temporal,
            settings,
            run_id,
            len(documents),
            tenant,
            principal.key_id,
            spec=spec,
            generation_id=generation_id,
        )
    except RPCError:
        # The run is recorded and its files are stored: the reconciler starts it once
        # Temporal is back, so the upload is still accepted and nothing is lost.
        log.exception("could not start %s now; it will be resumed", run_workflow_id(run_id))
    return _answer(run_id, digests, new, existing, trace_id)


async def _check(res: Resources, files: Sequence[ReceivedFile]) -> tuple[list[str], dict[str, int]]:
    """Every file's sha256 and the size of each content, once all are checked: a refused
    request stores nothing."""
    for upload in files:
        try:
            if upload.scan.head.startswith(ZIP_MAGIC):
                # Its central directory is read (from the store, if it was staged).
                await asyncio.to_thread(_judge, res, upload)
            else:
                _judge(res, upload)
        except RefusedUpload as exc:
            raise UnsupportedFile(f"{upload.filename}: {exc}") from exc
    return [f.sha256 for f in files], {f.sha256: f.size for f in files}


def _judge(res: Resources, upload: ReceivedFile) -> None:
    settings = res.settings
    judge(
        upload.scan,
        upload.filename,
        settings.allowed_types,
        settings.archive_limits,
        lambda: upload.opened(res.blobs),
    )


async def _store(blobs: BlobStore, upload: ReceivedFile, key: str, *, if_new: bool) -> None:
    """The upload's bytes under ``key``: from memory, or copied from where they were
    staged (inside the store). With ``if_new``, bytes already there are left as they are
    (the key is their digest)."""
    if upload.staged_key is not None:
        if if_new:
            await blobs.copy_new(upload.staged_key, key)
        else:
            await blobs.copy(upload.staged_key, key)
    elif not (if_new and await blobs.exists(key)):
        assert upload.data is not None
        await blobs.put(key, upload.data)


@dataclass(frozen=True)
class _NewRun:
    """What one upload asks to record, once its bytes are stored."""

    run_id: str
    digests: list[str]
    candidates: dict[str, NewDocument]
    spec: PipelineSpec
    trace_id: str | None
    idempotency_key: str | None
    fingerprint: str
    generation_id: str


Recorded = tuple[RunRow | None, dict[str, DocumentRow], dict[str, NewDocument]]


async def _record_one(
    conn: asyncpg.Connection, settings: Settings, tenant: str, new_run: _NewRun
) -> Recorded:
    """In the caller's transaction, which holds the tenant's run lock: the run an earlier
    request with this Idempotency-Key recorded (then nothing else), else the tenant's
    documents that already hold some of these bytes, and the rest recorded as a new run if
    the tenant is under its quotas (else ``UploadRefused``, having written nothing).
    Returns (earlier run, existing documents, new documents)."""
    if new_run.idempotency_key is not None:
        # The same key's first request may have committed while we stored the bytes.
        prior = await repository.run_by_idempotency_key(conn, tenant, new_run.idempotency_key)
        if prior is not None:
            return prior, {}, {}
    existing = await repository.indexed_documents(conn, tenant, new_run.digests)
    new = {d: doc for d, doc in new_run.candidates.items() if d not in existing}
    if not new:
        return None, existing, new
    await intake.record_run(
        conn,
        settings,
        tenant,
        new_run.run_id,
        list(new.values()),
        spec=new_run.spec,
        generation_id=new_run.generation_id,
        trace_id=new_run.trace_id,
        idempotency_key=new_run.idempotency_key,
        fingerprint=new_run.fingerprint,
    )
    return None, existing, new


class _Recorder:
    """Records a tenant's uploads one after another under its run lock, as ``_record_one``
    says, in as few transactions as it can: the uploads of this process that arrive while a
    transaction is open wait and are recorded together in the next one (one lock, one commit
    for all of them), by a task of their own. Each upload is answered once its transaction
    has committed; a refused one wrote nothing, so it does not disturb the others in its
    transaction. If the transaction fails, every upload in it gets the error."""

    def __init__(self) -> None:
        self._queues: dict[tuple[int, str], list[tuple[_NewRun, asyncio.Future[Recorded]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def record(self, res: Resources, tenant: str, new_run: _NewRun) -> Recorded:
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        key = (id(res), tenant)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = []
            task = asyncio.create_task(self._drain(res, tenant, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append((new_run, future))
        # Shielded: a caller that goes away does not cancel the others' transaction.
        return await asyncio.shield(future)

    async def _drain(
        self, res: Resources, tenant: str, queue: list[tuple[_NewRun, asyncio.Future[Recorded]]]
    ) -> None:
        try:
            while queue:
                batch = queue[:]
                del queue[:]
                await _record_batch(res, tenant, batch)
        finally:
            del self._queues[id(res), tenant]


async def _record_batch(
    res: Resources, tenant: str, batch: list[tuple[_NewRun, asyncio.Future[Recorded]]]
) -> None:
    outcomes: list[Recorded | UploadRefused] = []
    try:
        async with repository.transaction(res.pool) as conn:
            await repository.lock_tenant_runs(conn, tenant)
            for new_run, _ in batch:
                try:
                    outcomes.append(await _record_one(conn, res.settings, tenant, new_run))
                except UploadRefused as exc:
                    outcomes.append(exc)
    except BaseException as exc:
        for _, future in batch:
            if future.done():
                continue
            if isinstance(exc, Exception):
                future.set_exception(exc)
            else:  # the process is stopping: nothing of this transaction was committed
                future.cancel()
        if not isinstance(exc, Exception):
            raise
        return
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, UploadRefused):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


_RECORDER = _Recorder()


async def _forget_password(res: Resources, secret_key: str | None) -> None:
    """No run of this upload was recorded: its password has nothing to open."""
    if secret_key is not None:
        await res.blobs.delete(secret_key)


def _answer(
    run_id: str | None,
    digests: list[str],
    in_run: Mapping[str, NewDocument | DocumentRow],
    others: Mapping[str, DocumentRow],
    trace_id: str | None,
) -> UploadAccepted:
    """One entry per uploaded file, in upload order: the document of this run that holds
    its bytes, else the tenant's earlier document that does."""
    documents: list[AcceptedDocument] = []
    seen: set[str] = set()
    for digest in digests:
        repeat = digest in seen  # the same bytes twice in one upload: indexed once
        seen.add(digest)
        if digest in in_run and run_id is not None:
            d = in_run[digest]
            documents.append(
                AcceptedDocument(
                    document_id=d.document_id,
                    run_id=run_id,
                    filename=d.filename,
                    sha256=d.sha256,
                    size_bytes=d.size_bytes,
                    duplicate=repeat,
                )
            )
        elif digest in others:
            e = others[digest]
            documents.append(
                AcceptedDocument(
                    document_id=e.document_id,
                    run_id=e.run_id,
                    filename=e.filename,
                    sha256=digest,
                    size_bytes=e.size_bytes,
                    duplicate=True,
                )
            )
    return UploadAccepted(
        run_id=run_id,
        workflow_id=run_workflow_id(run_id) if run_id else None,
        documents=documents,
        status_url=f"/v1/runs/{run_id}" if run_id else None,
        trace_id=trace_id,
    )


async def _replay(
    res: Resources, prior: RunRow, fingerprint: str, digests: list[str], tenant: str
) -> UploadAccepted:
    """The answer to a repeated Idempotency-Key: the first upload's, nothing started."""
    if prior.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was already used for a different upload")
    in_run = {d.sha256: d for d in await repository.list_run_documents(res.pool, prior.run_id)}
    others = await repository.indexed_documents(
        res.pool, tenant, [d for d in digests if d not in in_run]
    )
    answer = _answer(prior.run_id, digests, in_run, others, prior.trace_id)
    answer.replayed = True
    return answer
