"""Worker Versioning: every docindex worker is a version of one Temporal Worker Deployment.

Each worker polls as ``WorkerDeploymentVersion(DOCINDEX_DEPLOYMENT_NAME, DOCINDEX_BUILD_ID)``;
the build id is by default a hash of the code that defines workflow behaviour
(``docindex/build_id.py``), so every process of one checkout or image agrees on it and a
changed workflow is a new version by itself. Workflows are PINNED: a run, the children it
starts and the runs it continues as stay on the version the run started on until they end.
A workflow change therefore ships as a new version, not as a ``workflow.patched`` branch:
new runs go to the deployment's *current* version (or, while one ramps, a percentage of them
to the ramping one), runs in flight finish on theirs. docs/operations.md, "Rolling out a
workflow change", has the procedure.

Activity-only workers (cpu, large, gpu, hosted) carry the version too: an activity of a
pinned run is dispatched only to workers of the run's version, so a run never meets
activities built for another version's workflow code (docs/decisions.md, "Worker
Versioning"). Keep a version's workers of every kind until it has drained.

Versioned workers receive nothing until their version is current (or ramping): tasks wait
in the queue, and are dispatched once it is. ``docindex dev`` sets it as soon as its workers
poll; a deployment sets it with::

    python -m workers.versioning set-current   # this code's build id, once its workers poll
    python -m workers.versioning ramp 10       # or send 10 % of new runs to it first
    python -m workers.versioning show          # versions, and the current and ramping ones
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionProto
from temporalio.api.enums.v1 import VersionDrainageStatus, WorkerDeploymentVersionStatus
from temporalio.api.workflowservice.v1 import (
    DescribeWorkerDeploymentRequest,
    DescribeWorkerDeploymentVersionRequest,
    SetWorkerDeploymentCurrentVersionRequest,
    SetWorkerDeploymentRampingVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

from docindex.config import Settings

log = logging.getLogger(__name__)

IDENTITY = "docindex-versioning"
# Worth waiting out: the version has no poller yet (NOT_FOUND), or the new version does not
# poll every task queue the current one serves yet (FAILED_PRECONDITION).
_NOT_YET = (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION)


def deployment_version(settings: Settings, build_id: str | None = None) -> WorkerDeploymentVersion:
    return WorkerDeploymentVersion(settings.deployment_name, build_id or settings.build_id)


def deployment_config(settings: Settings) -> WorkerDeploymentConfig:
    """What every docindex ``Worker`` is built with. Workflows are PINNED by default here,
    not in their ``@workflow.defn``: a workflow class that declares a behaviour cannot run
    on an unversioned worker at all (its workflow tasks fail with "versioning behavior
    cannot be specified without deployment options"), and tests and tools run them so."""
    return WorkerDeploymentConfig(
        version=deployment_version(settings),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.PINNED,
    )


def version_search_value(settings: Settings, build_id: str | None = None) -> str:
    """The version as the ``TemporalWorkerDeploymentVersion`` search attribute spells it."""
    return f"{settings.deployment_name}:{build_id or settings.build_id}"


async def _retrying(what: str, call: Callable[[], Awaitable[object]], wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            await call()
            return
        except RPCError as e:
            # A ramp of the current build is refused as FAILED_PRECONDITION too: final.
            final = e.status not in _NOT_YET or "already current" in e.message
            if final or time.monotonic() >= deadline:
                raise RuntimeError(f"{what}: {e.message}") from e
            log.debug("%s: %s; retrying", what, e.message)
        await asyncio.sleep(1.0)


async def set_current_version(
    client: Client,
    settings: Settings,
    *,
    build_id: str | None = None,
    wait_s: float = 120.0,
    ignore_missing_task_queues: bool = False,
) -> None:
    """Make this build (or ``build_id``) the deployment's current version: new runs start on
    it; pinned runs in flight stay where they are. Waits up to ``wait_s`` for the version's
    workers to poll (the server refuses a version it has seen no poller of, and one that
    does not poll every task queue the current version serves, unless
    ``ignore_missing_task_queues``). Idempotent."""
    version = deployment_version(settings, build_id)

    async def call() -> None:
        await client.workflow_service.set_worker_deployment_current_version(
            SetWorkerDeploymentCurrentVersionRequest(
                namespace=client.namespace,
                deployment_name=version.deployment_name,
                build_id=version.build_id,
                identity=IDENTITY,
                ignore_missing_task_queues=ignore_missing_task_queues,
            )
        )

    await _retrying(f"set current version {version.to_canonical_string()}", call, wait_s)
    log.info("current version of %s: %s", version.deployment_name, version.build_id)


async def set_ramping_version(
    client: Client,
    settings: Settings,
    percentage: float,
    *,
    build_id: str | None = None,
    wait_s: float = 120.0,
) -> None:
    """Send ``percentage`` % of new runs to this build (or ``build_id``), the rest to the
    current version. Setting the build current afterwards ends the ramp."""
    if not 0 <= percentage <= 100:
        raise ValueError(f"a ramp is a percentage, 0 to 100, not {percentage}")
    version = deployment_version(settings, build_id)

    async def call() -> None:
        await client.workflow_service.set_worker_deployment_ramping_version(
            SetWorkerDeploymentRampingVersionRequest(
                namespace=client.namespace,
                deployment_name=version.deployment_name,
                build_id=version.build_id,
                percentage=percentage,
                identity=IDENTITY,
            )
        )

    await _retrying(f"ramp {version.to_canonical_string()}", call, wait_s)
    log.info("ramping %s to %s%%", version.to_canonical_string(), percentage)


async def current_build_id(client: Client, settings: Settings) -> str | None:
    """The deployment's current build id; None when unset or the deployment is unknown."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=settings.deployment_name
            )
        )
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    current = response.worker_deployment_info.routing_config.current_deployment_version
    return current.build_id or None


async def open_runs_on_other_versions(client: Client, settings: Settings) -> int:
    """Open workflows of this deployment pinned to another build: they need that build's
    workers (of every kind) to finish."""
    query = (
        f"TemporalWorkerDeployment = '{settings.deployment_name}' "
        f"AND ExecutionStatus = 'Running' "
        f"AND TemporalWorkerDeploymentVersion != '{version_search_value(settings)}'"
    )
    return (await client.count_workflows(query)).count


async def _show(client: Client, settings: Settings) -> None:
    response = await client.workflow_service.describe_worker_deployment(
        DescribeWorkerDeploymentRequest(
            namespace=client.namespace, deployment_name=settings.deployment_name
        )
    )
    info = response.worker_deployment_info
    routing = info.routing_config
    print(f"deployment {info.name}: this code is build {settings.build_id}")
    print(f"  current: {routing.current_deployment_version.build_id or '(unversioned)'}")
    if routing.ramping_deployment_version.build_id:
        print(
            f"  ramping: {routing.ramping_deployment_version.build_id} "
            f"({routing.ramping_version_percentage:g} %)"
        )
    for summary in info.version_summaries:
        build = summary.deployment_version.build_id
        detail = await client.workflow_service.describe_worker_deployment_version(
            DescribeWorkerDeploymentVersionRequest(
                namespace=client.namespace,
                deployment_version=VersionProto(
                    deployment_name=settings.deployment_name, build_id=build
                ),
            )
        )
        version = detail.worker_deployment_version_info
        queues = sorted({q.name for q in version.task_queue_infos})
        print(
            f"  {build}: {_name(WorkerDeploymentVersionStatus, version.status)}, "
            f"drainage {_name(VersionDrainageStatus, version.drainage_info.status)}, "
            f"queues {', '.join(queues)}"
        )


def _name(enum: Any, value: int) -> str:
    """``VERSION_DRAINAGE_STATUS_DRAINING`` -> ``draining``."""
    return enum.Name(value).rsplit("_STATUS_", 1)[-1].lower()


async def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m workers.versioning",
        description="Set or show the docindex Worker Deployment's versions.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    current = commands.add_parser("set-current", help="make a build the current version")
    ramp = commands.add_parser("ramp", help="send a percentage of new runs to a build")
    ramp.add_argument("percentage", type=float)
    for sub in (current, ramp):
        sub.add_argument("--build-id", help="default: this code's build id")
        sub.add_argument(
            "--wait", type=float, default=600.0, help="seconds to wait for its workers to poll"
        )
    commands.add_parser("show", help="the deployment's versions and their drainage")
    args = parser.parse_args(argv)

    from docindex.temporal_client import connect

    settings = Settings()
    client = await connect(settings)
    if args.command == "set-current":
        await set_current_version(client, settings, build_id=args.build_id, wait_s=args.wait)
        print(f"{settings.deployment_name}: current version {args.build_id or settings.build_id}")
    elif args.command == "ramp":
        await set_ramping_version(
            client, settings, args.percentage, build_id=args.build_id, wait_s=args.wait
        )
        print(
            f"{settings.deployment_name}: ramping {args.build_id or settings.build_id} "
            f"at {args.percentage:g} %"
        )
    else:
        await _show(client, settings)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    code = 0
    try:
        asyncio.run(_main(argv))
    except RuntimeError as e:  # what _retrying gave up on
        print(f"error: {e}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The interpreter's finalization with a Temporal client loaded crashes now and then
    # (SIGABRT or SIGSEGV after everything was done: temporalio 1.35, about one exit in
    # three here), which a one-shot container would report as a failure. Skip it.
    os._exit(code)


if __name__ == "__main__":
    main()
