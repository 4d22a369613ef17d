"""GcWorkflow: one sweep of the blob store for what nothing references any more
(``docindex.gc``), started by the ``docindex-gc`` schedule, which the workflow worker
creates (or brings up to date with its settings) when it starts."""

from __future__ import annotations

import logging
from datetime import timedelta

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
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.gc import GcActivities, GcInput, GcSummary
    from docindex.config import Settings

GC_SCHEDULE_ID = "docindex-gc"
GC_WORKFLOW_ID = "docindex-gc"

log = logging.getLogger(__name__)


@workflow.defn(name="GcWorkflow")
class GcWorkflow:
    @workflow.run
    async def run(self, inp: GcInput) -> GcSummary:
        # Listing a big store takes a while; a sweep that fails is simply the next one's.
        return await workflow.execute_activity_method(
            GcActivities.collect_garbage,
            inp,
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


def gc_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            GcWorkflow.run,
            GcInput(grace_s=settings.gc_grace_s),
            id=GC_WORKFLOW_ID,
            task_queue=settings.workflow_task_queue,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.gc_interval_s))]
        ),
        # One sweep at a time: one still running when the next is due makes it unnecessary.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_gc_schedule(client: Client, settings: Settings) -> None:
    """Create the GC schedule, or make the existing one match ``settings``: every workflow
    worker calls this at start, so it is idempotent."""
    schedule = gc_schedule(settings)
    try:
        await client.create_schedule(GC_SCHEDULE_ID, schedule)
        log.info("created the %s schedule", GC_SCHEDULE_ID)
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(GC_SCHEDULE_ID).update(update)
