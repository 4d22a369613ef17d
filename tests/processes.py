"""Workers as separate OS processes, the way they run in production, for tests that kill
them or need several."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from temporalio.client import Client

from docindex.config import Settings


def worker_env(settings: Settings, client: Client, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCINDEX_")}
    env.update(
        {
            "DOCINDEX_TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "DOCINDEX_DATABASE_URL": settings.database_url or "",
            "DOCINDEX_BLOB_URL": Path(settings.blob_root).as_uri(),
            "DOCINDEX_WORKFLOW_TASK_QUEUE": settings.workflow_task_queue,
            "DOCINDEX_CPU_TASK_QUEUE": settings.cpu_task_queue,
            "DOCINDEX_GPU_TASK_QUEUE": settings.gpu_task_queue,
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env.update(overrides)
    return env


def start_worker(queue: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "docindex", "worker", "--queue", queue],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
