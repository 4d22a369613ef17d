"""OpenTelemetry: one trace per upload, from the HTTP request through the workflows to
every activity. Spans go out over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the
standard OTEL_* variables configure the exporter); without it they are still created and
propagated, just not exported."""

from __future__ import annotations

import logging
import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider

log = logging.getLogger(__name__)
_lock = threading.Lock()
_configured = False


def setup_tracing(service_name: str, exporter: SpanExporter | None = None) -> None:
    """Install the process's tracer provider, once. ``exporter`` replaces OTLP (tests)."""
    global _configured
    with _lock:
        if _configured:
            return
        # Replay-safe: span ids inside workflows must not change when a history replays.
        provider = create_tracer_provider(
            resource=Resource.create(
                {
                    "service.name": os.environ.get("OTEL_SERVICE_NAME", service_name),
                    "service.namespace": "docindex",
                }
            )
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        elif os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            log.info("exporting traces over OTLP")
        trace.set_tracer_provider(provider)
        _configured = True


def temporal_plugins() -> list[OpenTelemetryPlugin]:
    """Given to every Temporal client; workers built from a client inherit its plugins."""
    return [OpenTelemetryPlugin(add_temporal_spans=True)]


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
