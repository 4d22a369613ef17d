"""The steps of ``SourceWorkflow``, as activities on the workflow worker (Postgres, the blob
store and the source's object store): shells over ``docindex.sources.SourceSync``.

A step that fails notes why on the source (``last_error``, shown by ``GET /v1/sources``)
before Temporal retries it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, Field
from temporalio import activity

from docindex.repository import sources as repo
from docindex.sources import InvalidSource, SourceSync

T = TypeVar("T")


class SourceRef(BaseModel):
    source_id: str


class SyncRef(BaseModel):
    source_id: str
    sync_no: int


class ListPageInput(BaseModel):
    source_id: str
    # The key the page starts after: the listing's cursor, never the listing itself.
    after: str | None = None


class ListPageResult(BaseModel):
    after: str | None  # None: the listing is complete
    changed: int


class KeysInput(BaseModel):
    source_id: str
    keys: list[str] = Field(max_length=1000)


class ImportResult(BaseModel):
    recorded: int
    run_id: str | None
    refused: int
    waiting: bool
    more: bool


class SourceActivities:
    def __init__(self, sync: SourceSync) -> None:
        self.sync = sync

    async def _noting(self, source_id: str, step: Callable[[], Awaitable[T]]) -> T:
        try:
            return await step()
        except InvalidSource as exc:
            await repo.set_source_error(self.sync.pool, source_id, str(exc))
            raise
        except Exception as exc:
            await repo.set_source_error(self.sync.pool, source_id, f"{type(exc).__name__}: {exc}")
            raise

    @activity.defn
    async def begin_source_sync(self, inp: SourceRef) -> int:
        return await self.sync.begin(inp.source_id)

    @activity.defn
    async def list_source_page(self, inp: ListPageInput) -> ListPageResult:
        after, changed = await self._noting(
            inp.source_id, lambda: self.sync.list_page(inp.source_id, inp.after)
        )
        return ListPageResult(after=after, changed=changed)

    @activity.defn
    async def remove_missing_objects(self, inp: SyncRef) -> int:
        return await self.sync.remove_missing(inp.source_id, inp.sync_no)

    @activity.defn
    async def check_source_keys(self, inp: KeysInput) -> int:
        return await self._noting(
            inp.source_id, lambda: self.sync.check_keys(inp.source_id, inp.keys)
        )

    @activity.defn
    async def import_pending_objects(self, inp: SourceRef) -> ImportResult:
        outcome = await self._noting(
            inp.source_id,
            lambda: self.sync.import_pending(inp.source_id, heartbeat=activity.heartbeat),
        )
        return ImportResult(
            recorded=outcome.recorded,
            run_id=outcome.run_id,
            refused=outcome.refused,
            waiting=outcome.waiting,
            more=outcome.more,
        )

    @activity.defn
    async def finish_source_sync(self, inp: SyncRef) -> None:
        await self.sync.finish(inp.source_id, inp.sync_no)

    @activity.defn
    async def purge_source_documents(self, inp: SourceRef) -> int:
        return await self.sync.purge(inp.source_id)

    def all(self) -> list:
        return [
            self.begin_source_sync,
            self.list_source_page,
            self.remove_missing_objects,
            self.check_source_keys,
            self.import_pending_objects,
            self.finish_source_sync,
            self.purge_source_documents,
        ]
