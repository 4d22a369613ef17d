"""What a figure gets: the stack, started parts on demand, and the run's options."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from bench.stack import Proc, Stack

if TYPE_CHECKING:
    from cli.local_index import LocalIndexer

WORKER_KINDS = ("workflow", "cpu", "gpu", "hosted")


@dataclass
class Ctx:
    stack: Stack
    corpus: Path
    quick: bool
    repeat: int
    parallel: int
    console: Console
    # Documents in flight in figure 1 (a run's window), on both sides.
    window: int = 8
    # Figure 9's index: chunks of every tenant, and their dimension.
    index_chunks: int = 1_000_000
    index_dim: int = 384
    # Figure 1: the big-PDF corpus instead of the shared one; the anchor's settings sweep
    # (worker processes, texts per embedding batch).
    big: bool = False
    # Figure 4's run size (None: 2,000, or 200 quick).
    fanout_documents: int | None = None
    anchor_processes: tuple[int, ...] = (1, 2)
    anchor_batches: tuple[int, ...] = (64, 256)
    anchor_threads: tuple[int, ...] = (1, 2)
    # Peak RSS by process kind over every service run sampled so far (figure 8).
    memory: dict[str, int] = field(default_factory=dict)
    _apis: dict[tuple[tuple[str, str], ...], tuple[Proc, str]] = field(default_factory=dict)
    _workers: list[Proc] = field(default_factory=list)
    _local: LocalIndexer | None = None

    async def service(self) -> list[Proc]:
        """One worker process of each kind, with the CPU concurrency the local path gets."""
        alive = [p for p in self._workers if p.popen.poll() is None]
        if len(alive) != len(WORKER_KINDS):
            self.stack.stop(alive)
            self._workers = await self.stack.start_workers(
                WORKER_KINDS, DOCINDEX_CPU_WORKER_CONCURRENCY=str(self.parallel)
            )
        return self._workers

    async def api(self, **env: str) -> str:
        """An API process with these settings (one per distinct set, kept for the run)."""
        key = tuple(sorted(env.items()))
        if key not in self._apis or self._apis[key][0].popen.poll() is not None:
            self._apis[key] = await self.stack.start_api(**env)
        return self._apis[key][1]

    def api_pid(self, **env: str) -> int:
        """The process of the API that ``api(**env)`` started."""
        return self._apis[tuple(sorted(env.items()))][0].popen.pid

    async def local(self) -> LocalIndexer:
        if self._local is None:
            from cli.local_index import LocalIndexer

            settings = self.stack.settings.model_copy(
                update={"cpu_worker_concurrency": self.parallel}
            )
            self._local = await asyncio.to_thread(LocalIndexer, settings, self.stack.pool)
        return self._local

    def worker_pids(self) -> dict[str, int]:
        pids = {p.kind: p.popen.pid for p in self._workers if p.popen.poll() is None}
        for proc, _ in self._apis.values():
            if proc.popen.poll() is None:
                pids.setdefault("api", proc.popen.pid)
        return pids

    def record_memory(self, peaks: dict[str, int]) -> None:
        for k, v in peaks.items():
            self.memory[k] = max(self.memory.get(k, 0), v)
