"""Run work on untrusted bytes in child processes that can be limited and killed.

A thread cannot be stopped: a parse cancelled or timed out in a thread keeps its CPU until
it ends, and a parse that eats all memory takes the whole worker with it. Here each call
runs in a child process of a small pool:

- memory: the child's address space is capped (``RLIMIT_AS``), so a bomb fails its own
  allocation (``MemoryError``, or the child dies) instead of waking the kernel's OOM killer;
- CPU: each call gets a CPU-seconds budget (``RLIMIT_CPU``, raised by that budget at each
  call: the kernel sends SIGXCPU when it is spent, even to a child stuck in C code);
- wall clock and silence: the parent kills a child past the call's time budget, or one that
  neither reported progress nor used any CPU for ``stall_s`` (deadlocked, stopped);
- cancel: a cancelled call kills its child at once (SIGKILL) and a fresh one takes its slot.

Progress the child reports (pages done) reaches the caller's ``on_progress``, and every sign
of life (a report, or CPU time used) its ``on_alive``: the activity heartbeats from those,
so a silent child stops the heartbeat too. A child that dies is replaced; the caller gets a
typed error (``ResourceLimit`` when a limit stopped it, ``ParseKilled`` otherwise) and the
worker carries on.

Children are plain ``python -m docindex.cage`` processes talking over two pipes: not
``multiprocessing``'s spawn, which re-imports the parent's ``__main__`` (the CLI). They die
with their parent (``PR_SET_PDEATHSIG``).

No Temporal, no Docling: what runs in a child is a module-level function, named by import.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from docindex.errors import DocumentError, ParseKilled, ParseTimeout, ResourceLimit

log = logging.getLogger(__name__)

T = TypeVar("T")

# How often the parent looks at a running child (its CPU time, the wall clock).
_WATCH_EVERY_S = 0.5
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Where a child's CPU time cannot be read: replaced after this many calls.
_CALLS_WITHOUT_CPU_TIME = 200
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class CageLimits:
    """What one call may cost (worker settings, ``DOCINDEX_PARSE_*``)."""

    processes: int = 2
    # Address space of a child. A child with Docling loaded maps about 1.3 GB before it
    # reads a byte, so this is the baseline plus what one document may use.
    memory_bytes: int = 6 << 30
    cpu_s: float = 900.0
    # A child that neither reports progress nor uses CPU for this long is stuck.
    stall_s: float = 60.0
    # A child is replaced once it has done this much work (CPU seconds: what its parses
    # leave behind goes with it), or after this many calls. Work, not calls: a new child
    # imports Docling and builds its parser again (3.7 CPU-s), which a run of small
    # documents would otherwise pay every few hundred of them. Not by resident memory: a
    # big document leaves the allocator holding hundreds of MB that are not a leak, and
    # replacing the child after each such document cost figure 1 a tenth of its time.
    # 600: a new child costs 0.6 % of the work it then does (3.7 % at 100); through the
    # corpus 20 times (366 CPU-s) one child's resident memory went from 734 to 836 MB.
    work_cpu_s: float = 600.0
    calls_per_child: int = 10_000


class _Child:
    """One child process and the thread that reads what it sends."""

    def __init__(self, limits: CageLimits) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = {
            **os.environ,
            # Each thread's malloc arena reserves 64 MB of address space; with the address
            # space capped, that reservation (not use) would be what runs out.
            "MALLOC_ARENA_MAX": "2",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "docindex.cage",
                str(to_child_r),
                str(from_child_w),
                str(limits.memory_bytes),
            ],
            pass_fds=(to_child_r, from_child_w),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._send = Connection(to_child_w, readable=False)
        self._recv = Connection(from_child_r, writable=False)
        self.calls = 0
        self._inbox: asyncio.Queue[tuple[str, Any]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name=f"cage-{self.pid}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _read(self) -> None:
        while True:
            try:
                message = self._recv.recv()
            except (EOFError, OSError):
                message = ("exit", None)
            except Exception as exc:  # an answer that does not unpickle
                message = ("error", ParseKilled(f"the parse's answer could not be read: {exc}"))
            with self._lock, contextlib.suppress(RuntimeError):
                # RuntimeError: the caller's loop has closed, and nobody waits for this.
                if self._inbox is not None and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._inbox.put_nowait, message)
            if message[0] == "exit":
                return

    def start(self, call: tuple[str, str, tuple[Any, ...], dict[str, Any], float]) -> None:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._inbox = asyncio.Queue()
        self.calls += 1
        self._send.send(call)

    async def next_message(self, wait_s: float) -> tuple[str, Any] | None:
        assert self._inbox is not None
        try:
            return await asyncio.wait_for(self._inbox.get(), wait_s)
        except TimeoutError:
            return None

    def sound(self, limits: CageLimits) -> bool:
        """Worth keeping for another call: under its call cap and its budget of work
        (where its CPU time cannot be read, the first 200 calls only)."""
        if self.calls >= limits.calls_per_child:
            return False
        ticks = self.cpu_ticks()
        if ticks is None:
            return self.calls < _CALLS_WITHOUT_CPU_TIME
        return ticks / _TICKS_PER_S <= limits.work_cpu_s

    def cpu_ticks(self) -> int | None:
        """User and system CPU time the child has used, in clock ticks (Linux)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            return None
        return int(fields[11]) + int(fields[12])

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.close()

    def close(self) -> None:
        for conn in (self._send, self._recv):
            with contextlib.suppress(OSError):
                conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class Cage:
    """A pool of children; ``call`` runs a function in one of them."""

    def __init__(self, limits: CageLimits | None = None) -> None:
        self.limits = limits or CageLimits()
        self._idle: list[_Child] = []
        self._slots = asyncio.Semaphore(self.limits.processes)
        self._closed = False
        # What warm() ran in each child, run again in each child that replaces one.
        self._warmer: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        # Children starting and warming in the background to replace retired ones.
        self._spares: list[asyncio.Task[_Child]] = []

    async def call(
        self,
        func: Callable[..., T],
        *args: Any,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        on_alive: Callable[[], None] | None = None,
        time_budget_s: float | None = None,
        stall_s: float | None = None,
        **kwargs: Any,
    ) -> T:
        """``func(*args, report=..., **kwargs)`` in a child; ``report(dict)`` there reaches
        ``on_progress`` here. ``func`` must be importable by its module and name."""
        if self._closed:
            raise RuntimeError("the cage is closed")
        stall = stall_s or self.limits.stall_s
        async with self._slots:
            child = await self._take()
            reusable = False
            try:
                child.start((func.__module__, func.__qualname__, args, kwargs, self.limits.cpu_s))
                kind, body = await self._watch(child, on_progress, on_alive, time_budget_s, stall)
                # The child answered: it is sound, unless it ran out of memory.
                reusable = not isinstance(body, ResourceLimit)
                if kind == "error":
                    raise body
                return body  # type: ignore[no-any-return]
            finally:
                if reusable and child.sound(self.limits) and not self._closed:
                    self._idle.append(child)
                else:
                    # Cancelled, over a limit, dead or stalled: killed now, reaped aside.
                    with contextlib.suppress(ProcessLookupError):
                        child.process.kill()
                    self._replace_soon()
                    await asyncio.to_thread(child.close)

    async def _take(self) -> _Child:
        """An idle child, else a spare (warmed in the background), else a new one."""
        if self._idle:
            return self._idle.pop()
        while self._spares:
            spare = self._spares.pop(0)
            try:
                return await spare
            except Exception as exc:  # it could not start or warm: the next one may
                log.warning("a spare parse process failed to start: %s", exc)
        return await asyncio.to_thread(_Child, self.limits)

    def _replace_soon(self) -> None:
        """Start a child in place of a retired one and warm it now, not when the next call
        needs it: a new child imports Docling and builds its parser, ~3.5 s on the critical
        path of whichever document comes next."""
        if self._warmer is None or self._closed or len(self._spares) >= self.limits.processes:
            return
        self._spares.append(asyncio.create_task(self._warmed_child()))

    async def _warmed_child(self) -> _Child:
        assert self._warmer is not None
        func, args = self._warmer
        child = await asyncio.to_thread(_Child, self.limits)
        try:
            child.start((func.__module__, func.__qualname__, args, {}, self.limits.cpu_s))
            kind, body = await self._watch(child, None, None, None, self.limits.stall_s)
        except BaseException:
            child.kill()
            raise
        if kind == "error":
            child.kill()
            raise body
        return child

    async def _watch(
        self,
        child: _Child,
        on_progress: Callable[[dict[str, Any]], None] | None,
        on_alive: Callable[[], None] | None,
        time_budget_s: float | None,
        stall_s: float,
    ) -> tuple[str, Any]:
        """The child's answer, ("ok", result) or ("error", exception); raises when the
        child dies, stalls or runs past the time budget."""
        started = last_life = time.monotonic()
        ticks = child.cpu_ticks()
        while True:
            message = await child.next_message(_WATCH_EVERY_S)
            now = time.monotonic()
            if message is not None:
                kind, body = message
                if kind in ("ok", "error"):
                    return kind, body
                if kind == "progress":
                    last_life = now
                    if on_progress is not None:
                        on_progress(body)
                    if on_alive is not None:
                        on_alive()
                    continue
                raise self._death(child, now - started)
            if not child.alive():
                raise self._death(child, now - started)
            used = child.cpu_ticks()
            if used is not None and ticks is not None and used > ticks:
                last_life = now
                if on_alive is not None:
                    on_alive()
            ticks = used if used is not None else ticks
            if time_budget_s is not None and now - started > time_budget_s:
                raise ParseTimeout(f"parsing took longer than the budget of {time_budget_s:.0f}s")
            if now - last_life > stall_s:
                raise ParseKilled(
                    f"the parse stopped: no progress and no CPU used for {stall_s:.0f}s "
                    "(deadlocked or stuck); its process was killed"
                )

    def _death(self, child: _Child, after_s: float) -> DocumentError | ParseKilled:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(timeout=5)
        code = child.process.returncode
        log.warning("parse process %d died after %.1fs (exit %s)", child.pid, after_s, code)
        if code == -signal.SIGXCPU:
            return ResourceLimit(
                f"the parse used its CPU budget of {self.limits.cpu_s:.0f}s and was stopped"
            )
        if code == -signal.SIGKILL:
            # Not us (we kill only after deciding why): the kernel's OOM killer, or an operator.
            return ParseKilled("the parse process was killed (SIGKILL: out of memory?)")
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return ParseKilled(f"the parse process crashed ({name}) on this document")
        return ParseKilled(f"the parse process exited unexpectedly (status {code})")

    async def warm(self, func: Callable[..., Any], *args: Any) -> None:
        """Start every child and run ``func`` in each (build the parsers before polling)."""
        self._warmer = (func, args)
        children = await asyncio.gather(
            *(asyncio.to_thread(_Child, self.limits) for _ in range(self.limits.processes))
        )
        self._idle.extend(children)
        await asyncio.gather(*(self.call(func, *args) for _ in children))

    def close(self) -> None:
        self._closed = True
        for child in self._idle:
            child.kill()
        for spare in self._spares:
            if not spare.done():
                spare.cancel()
            elif not spare.cancelled() and spare.exception() is None:
                spare.result().kill()
        self._idle.clear()


# --- the child side ------------------------------------------------------------------


def _serve(read_fd: int, write_fd: int, memory_bytes: int) -> None:
    """Run calls until the parent closes the pipe (or dies: the kernel kills us then)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl
        return
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # SIGXCPU dumps core by default: gigabytes of address space to write for nothing.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A child is killed with its work when a call is cancelled: never a reason to log.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)

    def report(details: dict[str, Any]) -> None:
        outbox.send(("progress", details))

    while True:
        try:
            module, name, args, kwargs, cpu_s = inbox.recv()
        except EOFError:
            return
        _budget_cpu(cpu_s)
        try:
            func = _resolve(module, name)
            answer: tuple[str, Any] = ("ok", func(*args, report=report, **kwargs))
        except MemoryError:
            answer = ("error", ResourceLimit("the parse ran past its memory limit"))
        except Exception as exc:  # the caller's to judge, as if the call had been in-process
            answer = ("error", exc)
        try:
            outbox.send(answer)
        except MemoryError:
            outbox.send(("error", ResourceLimit("the parse's result exceeds the memory limit")))
        except Exception as exc:  # an exception that does not pickle
            outbox.send(("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))
            log.debug("unpicklable answer: %s", exc)
        if isinstance(answer[1], ResourceLimit):
            return  # a MemoryError may leave any state half-built: the parent starts afresh


def _budget_cpu(cpu_s: float) -> None:
    """The soft CPU limit, as the CPU used so far plus this call's budget. The hard limit
    stays unlimited, so the next call can raise the soft one again."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (int(used + cpu_s) + 1, hard))


def _resolve(module: str, name: str) -> Callable[..., Any]:
    import importlib

    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
