"""Metrics. Workers: the Temporal SDK's own (task latencies per activity type, i.e. step
durations; schedule-to-start, i.e. queue backlog) plus ours, all through the SDK's meter on
one Prometheus endpoint per worker. The API: prometheus_client on /metrics."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio import activity, workflow
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig


def worker_runtime(metrics_port: int | None) -> Runtime | None:
    """A Temporal runtime serving Prometheus metrics on ``metrics_port`` (None: off)."""
    if metrics_port is None:
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"0.0.0.0:{metrics_port}", durations_as_seconds=True
            )
        )
    )


def count_in_activity(name: str, value: int, description: str, **labels: str) -> None:
    """Add to a counter from inside an activity (a no-op meter when metrics are off, and
    nothing at all when a step runs outside a worker, as in ``docindex index-local``)."""
    if value <= 0 or not activity.in_activity():
        return
    counter = activity.metric_meter().create_counter(name, description)
    counter.with_additional_attributes(dict(labels)).add(value)


def count_in_workflow(name: str, description: str, labels: Mapping[str, str]) -> None:
    """Add one to a counter from workflow code; the SDK skips it during replay."""
    counter = workflow.metric_meter().create_counter(name, description)
    counter.with_additional_attributes(dict(labels)).add(1)
