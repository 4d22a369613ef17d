"""WebhookWorkflow: one per webhook (``webhook/<webhook_id>``), sending its pending
deliveries one at a time in the order their events happened, each retried with exponential
backoff until it is delivered or its time (24 h from its event by default) runs out.

Deliveries are recorded in Postgres with their events; the event's writer wakes this
workflow with a signal (``wake_webhooks``: signal-with-start, so it starts if it is not
running). Idle, it looks again every ``poll_s`` (a wake that was lost costs that much delay)
and continues as new on the deployment's current version, so an idle webhook never holds
an old worker build.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import (
        WEBHOOK_GONE,
        GiveUpInput,
        Pending,
        PendingInput,
        WebhookActivities,
    )
    from docindex.config import Settings

    from .step_policy import BOOKKEEPING_RETRY

WAKE_SIGNAL = "wake"
# Deliveries sent by one execution before it continues as new (its history stays small).
PER_EXECUTION = 500


class WebhookInput(BaseModel):
    webhook_id: str
    retry_initial_s: float = 5.0
    retry_max_interval_s: float = 600.0
    max_age_s: float = 24 * 3600.0
    attempt_timeout_s: float = 30.0
    poll_s: float = 300.0
    task_queue: str = "docindex-workflows"


def webhook_workflow_id(webhook_id: str) -> str:
    return f"webhook/{webhook_id}"


@workflow.defn(name="WebhookWorkflow")
class WebhookWorkflow:
    def __init__(self) -> None:
        self._woken = False

    @workflow.signal(name=WAKE_SIGNAL)
    def wake(self) -> None:
        self._woken = True

    @workflow.run
    async def run(self, inp: WebhookInput) -> None:
        sent = 0
        while True:
            self._woken = False
            pending: Pending = await workflow.execute_local_activity_method(
                WebhookActivities.pending_webhook_deliveries,
                PendingInput(webhook_id=inp.webhook_id),
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=BOOKKEEPING_RETRY,
            )
            if not pending.exists:
                return
            for delivery in pending.deliveries:
                if not await self._deliver(inp, delivery.delivery_id, delivery.created_at):
                    return
                sent += 1
            if pending.deliveries and sent < PER_EXECUTION:
                continue
            if not pending.deliveries:
                try:
                    await workflow.wait_condition(lambda: self._woken, timeout=inp.poll_s)
                    if sent < PER_EXECUTION:
                        continue
                except TimeoutError:
                    pass
            workflow.continue_as_new(
                inp,
                initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
            )

    async def _deliver(self, inp: WebhookInput, delivery_id: str, created_at: datetime) -> bool:
        """Send one delivery until it is delivered or its time runs out (then it is recorded
        failed). False when the webhook was deleted meanwhile."""
        left = created_at + timedelta(seconds=inp.max_age_s) - workflow.now()
        reason = "not delivered within its time"
        if left > timedelta(0):
            try:
                await workflow.execute_activity_method(
                    WebhookActivities.deliver_webhook,
                    delivery_id,
                    task_queue=inp.task_queue,
                    start_to_close_timeout=timedelta(seconds=inp.attempt_timeout_s + 30),
                    schedule_to_close_timeout=max(left, timedelta(seconds=1)),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=inp.retry_initial_s),
                        backoff_coefficient=2.0,
                        maximum_interval=timedelta(seconds=inp.retry_max_interval_s),
                        non_retryable_error_types=[WEBHOOK_GONE],
                    ),
                    summary=delivery_id,
                )
                return True
            except ActivityError as err:
                cause = err.cause
                if isinstance(cause, ApplicationError) and cause.type == WEBHOOK_GONE:
                    return False
                reason = f"gave up after its time ran out: {cause or err}"
        await workflow.execute_local_activity_method(
            WebhookActivities.give_up_webhook_delivery,
            GiveUpInput(delivery_id=delivery_id, reason=reason[:500]),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=BOOKKEEPING_RETRY,
        )
        return True


def webhook_input(settings: Settings, webhook_id: str) -> WebhookInput:
    return WebhookInput(
        webhook_id=webhook_id,
        retry_initial_s=settings.webhook_retry_initial_s,
        retry_max_interval_s=settings.webhook_retry_max_interval_s,
        max_age_s=settings.webhook_max_age_s,
        attempt_timeout_s=settings.webhook_timeout_s,
        task_queue=settings.workflow_task_queue,
    )


async def wake_webhooks(client: Client, settings: Settings, webhook_ids: Sequence[str]) -> None:
    """Tell these webhooks' workflows they have deliveries to send, starting those that are
    not running (signal-with-start)."""
    await asyncio.gather(
        *(
            client.start_workflow(
                WebhookWorkflow.run,
                webhook_input(settings, webhook_id),
                id=webhook_workflow_id(webhook_id),
                task_queue=settings.workflow_task_queue,
                start_signal=WAKE_SIGNAL,
                static_summary=f"webhook {webhook_id}",
            )
            for webhook_id in webhook_ids
        )
    )
