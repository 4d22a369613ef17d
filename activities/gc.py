"""The blob store's garbage collection as an activity of ``GcWorkflow``, on the workflow
worker (it has the database pool). A shell over ``docindex.gc.collect``."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from pydantic import BaseModel, Field
from temporalio import activity

from docindex import gc
from docindex.blobstore import BlobStore


class GcInput(BaseModel):
    # Objects younger than this are spared (docindex/gc.py: the grace period).
    grace_s: float = Field(ge=0)
    dry_run: bool = False
    tenant: str | None = None


class TenantFreed(BaseModel):
    objects: int
    bytes: int


class GcSummary(BaseModel):
    dry_run: bool
    objects: int
    bytes: int
    tenants: dict[str, TenantFreed]
    scanned: int
    young: int
    passwords_released: int


class GcActivities:
    def __init__(self, pool: asyncpg.Pool, blobs: BlobStore) -> None:
        self.pool = pool
        self.blobs = blobs

    @activity.defn
    async def collect_garbage(self, inp: GcInput) -> GcSummary:
        report = await gc.collect(
            self.pool,
            self.blobs,
            grace=timedelta(seconds=inp.grace_s),
            dry_run=inp.dry_run,
            tenant=inp.tenant,
        )
        return summary(report)

    def all(self) -> list:
        return [self.collect_garbage]


def summary(report: gc.GcReport) -> GcSummary:
    return GcSummary(
        dry_run=report.dry_run,
        objects=report.objects,
        bytes=report.bytes,
        tenants={
            t: TenantFreed(objects=g.objects, bytes=g.bytes) for t, g in report.tenants.items()
        },
        scanned=report.scanned,
        young=report.young,
        passwords_released=report.passwords_released,
    )
