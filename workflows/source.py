"""SourceWorkflow: one per source (``source/<source_id>``), an entity that syncs its source
whenever asked, and its schedule.

The ``source-sync/<source_id>`` schedule starts a ``SourceTickWorkflow`` every
``interval_s`` that signals ``sync``; ``POST /v1/sources/{id}/sync`` signals it too, and
``POST /v1/sources/{id}/events`` signals ``sync_keys`` with the keys S3 named. A sync is
steps, one activity each: list a page (the cursor is the last key), remove what the
complete listing did not see, record pending objects as runs (waiting while the tenant is
at its quota), mark the source synced. Keys named by an event are looked at between steps.
The workflow keeps only cursors and counters and continues-as-new often; what was seen is
in Postgres. ``stop`` ends it (after deleting the source's documents, with ``purge``).

The entity never ends on its own, so it is AUTO_UPGRADE rather than pinned (as the other
workflows are): each workflow task runs on the deployment's current version. Its history is
a few steps long (it continues-as-new after each sync), and a change to this module must
replay the recorded source history (tests/test_replay.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.common import (
    Priority,
    RetryPolicy,
    VersioningBehavior,
    WorkflowIDConflictPolicy,
)
from temporalio.exceptions import ActivityError
from temporalio.service import RPCError, RPCStatusCode

with workflow.unsafe.imports_passed_through():
    from activities.sources import (
        ImportResult,
        KeysInput,
        ListPageInput,
        ListPageResult,
        SourceActivities,
        SourceRef,
        SyncRef,
    )
    from docindex.config import Settings

    from . import names
    from .source_contract import (
        MAX_EVENT_KEYS,
        STOP_SIGNAL,
        SYNC_KEYS_SIGNAL,
        SYNC_SIGNAL,
        SourceInput,
        SourceProgress,
        SourceTick,
        StopRequest,
        source_schedule_id,
        source_workflow_id,
    )

T = TypeVar("T")

# A source that cannot be read (bucket gone, credentials refused) fails a few times, notes
# why on the source, and waits for the next sync rather than retrying forever.
_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=4,
)
# Steps before the workflow continues as new, even in the middle of a long first import.
_STEPS_PER_EXECUTION = 200


@workflow.defn(name="SourceWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class SourceWorkflow:
    def __init__(self) -> None:
        self._s: SourceInput | None = None
        self._phase = "idle"

    @workflow.signal(name=SYNC_SIGNAL)
    def sync(self) -> None:
        assert self._s is not None
        self._s.sync_requested = True

    @workflow.signal(name=SYNC_KEYS_SIGNAL)
    def sync_keys(self, keys: list[str]) -> None:
        assert self._s is not None
        known = set(self._s.keys)
        self._s.keys.extend(k for k in keys if k not in known)

    @workflow.signal(name=STOP_SIGNAL)
    def stop(self, request: StopRequest) -> None:
        assert self._s is not None
        self._s.stop = True
        self._s.purge = self._s.purge or request.purge

    @workflow.query(name=names.STATUS_QUERY)
    def status(self) -> SourceProgress:
        assert self._s is not None
        return SourceProgress(
            source_id=self._s.source_id,
            phase=self._phase,
            sync_no=self._s.sync_no,
            syncs=self._s.syncs,
            recorded=self._s.recorded,
            keys_waiting=len(self._s.keys),
        )

    @workflow.run
    async def run(self, inp: SourceInput) -> None:
        # Signals may arrive before this runs: they set fields of the input it starts with.
        self._s = s = inp
        ref = SourceRef(source_id=s.source_id)
        for _ in range(_STEPS_PER_EXECUTION):
            self._phase = "idle"
            await workflow.wait_condition(
                lambda: (
                    s.stop
                    or s.sync_requested
                    or bool(s.keys)
                    or s.sync_no is not None
                    or s.importing
                )
            )
            if s.stop:
                break
            try:
                await self._step(s, ref)
            except ActivityError:
                # Why is noted on the source (last_error); the next sync starts afresh.
                workflow.logger.warning("source %s: a sync step failed", s.source_id)
                s.sync_no, s.after, s.listing, s.importing = None, None, False, False
            if workflow.info().is_continue_as_new_suggested():
                break
        if s.stop:
            if s.purge:
                await self._purge(s, ref)
            return
        workflow.continue_as_new(s)

    async def _step(self, s: SourceInput, ref: SourceRef) -> None:
        """One step: keys an event named first, then the sync under way, else a new one."""
        if s.keys:
            keys, s.keys = s.keys[:MAX_EVENT_KEYS], s.keys[MAX_EVENT_KEYS:]
            self._phase = "checking"
            await self._act(
                SourceActivities.check_source_keys, KeysInput(source_id=s.source_id, keys=keys)
            )
            s.importing = True
        elif s.sync_no is None and s.sync_requested:
            s.sync_requested = False
            s.sync_no = await self._act(SourceActivities.begin_source_sync, ref)
            s.after, s.listing = None, True
        elif s.listing:
            assert s.sync_no is not None
            self._phase = "listing"
            page: ListPageResult = await self._act(
                SourceActivities.list_source_page,
                ListPageInput(source_id=s.source_id, after=s.after),
            )
            s.after = page.after
            if page.after is None:
                await self._act(
                    SourceActivities.remove_missing_objects,
                    SyncRef(source_id=s.source_id, sync_no=s.sync_no),
                )
                s.listing, s.importing = False, True
        elif s.importing:
            self._phase = "importing"
            result: ImportResult = await self._act(
                SourceActivities.import_pending_objects, ref, limit=timedelta(hours=1)
            )
            s.recorded += result.recorded
            if result.waiting:
                # The tenant is at its quota: wait for runs to finish, never fail.
                self._phase = "waiting"
                await self._pause(s.quota_wait_s, lambda: s.stop)
            elif not result.more:
                s.importing = False
        elif s.sync_no is not None:
            await self._act(
                SourceActivities.finish_source_sync,
                SyncRef(source_id=s.source_id, sync_no=s.sync_no),
            )
            s.sync_no, s.syncs = None, s.syncs + 1

    async def _purge(self, s: SourceInput, ref: SourceRef) -> None:
        """Delete the source's documents; those being indexed once they are done."""
        self._phase = "purging"
        while await self._act(SourceActivities.purge_source_documents, ref):
            await workflow.sleep(s.quota_wait_s)

    async def _pause(self, seconds: float, until: Callable[[], bool]) -> None:
        try:
            await workflow.wait_condition(until, timeout=timedelta(seconds=seconds))
        except TimeoutError:
            pass

    async def _act(
        self,
        activity: Callable[[Any, Any], Awaitable[T]],
        arg: Any,
        limit: timedelta = timedelta(minutes=10),
    ) -> T:
        return await workflow.execute_activity_method(
            activity,  # type: ignore[arg-type]
            arg,
            start_to_close_timeout=limit,
            # Importing copies objects one by one and beats after each.
            heartbeat_timeout=timedelta(minutes=10),
            retry_policy=_RETRY,
        )


@workflow.defn(name="SourceTickWorkflow")
class SourceTickWorkflow:
    """Started by a source's schedule: asks the source's workflow to sync. A schedule can
    only start workflows; this is the smallest one that signals another."""

    @workflow.run
    async def run(self, tick: SourceTick) -> None:
        handle = workflow.get_external_workflow_handle(source_workflow_id(tick.source_id))
        await handle.signal(SYNC_SIGNAL)


def source_schedule(settings: Settings, source_id: str, interval_s: float) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SourceTickWorkflow.run,
            SourceTick(source_id=source_id),
            id=f"source-tick/{source_id}",
            task_queue=settings.workflow_task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=interval_s))]),
        # A tick that finds the last one still signalling is useless: the sync is asked for.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def start_source(
    client: Client, settings: Settings, source_id: str, tenant_id: str, interval_s: float
) -> None:
    """Start the source's workflow (its first sync at once) and its schedule."""
    await client.start_workflow(
        SourceWorkflow.run,
        SourceInput(
            source_id=source_id, tenant_id=tenant_id, quota_wait_s=settings.source_quota_wait_s
        ),
        id=source_workflow_id(source_id),
        task_queue=settings.workflow_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"source {source_id} of {tenant_id}",
        priority=Priority(fairness_key=tenant_id),
    )
    try:
        await client.create_schedule(
            source_schedule_id(source_id), source_schedule(settings, source_id, interval_s)
        )
    except ScheduleAlreadyRunningError:
        pass


async def stop_source(client: Client, source_id: str, purge: bool) -> None:
    """Delete the source's schedule and ask its workflow to stop (after deleting the
    source's documents, with ``purge``). Either may be gone already."""
    try:
        await client.get_schedule_handle(source_schedule_id(source_id)).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        await client.get_workflow_handle(source_workflow_id(source_id)).signal(
            STOP_SIGNAL, StopRequest(purge=purge)
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
