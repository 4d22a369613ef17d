"""One way to connect to Temporal, with the pydantic data converter everywhere."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from docindex.config import Settings
from docindex.telemetry import temporal_plugins


def temporal_address(settings: Settings) -> str:
    return settings.temporal_address or f"127.0.0.1:{settings.temporal_port}"


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        temporal_address(settings),
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        plugins=temporal_plugins(),
        runtime=runtime,
    )
