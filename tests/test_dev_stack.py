"""What `make run` does, for real: the supervised stack, the README's example against it,
Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .helpers import dev_env as own_dev_env

UP_BANNER = "docindex is up"


class Output:
    """Collects a process's output on a thread so the pipe never fills up."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, text: str, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            time.sleep(0.2)
        # A Go panic's cause is its first line, far above the last 60 of its stack.
        causes = [line for line in self.lines if "panic:" in line or "error" in line.lower()]
        raise AssertionError(
            f"{text!r} not seen in {limit_s}s; first errors:\n"
            + "".join(causes[:10])
            + "last lines:\n"
            + "".join(self.lines[-60:])
        )


@pytest.fixture
def dev_env(tmp_path: Path) -> dict[str, str]:
    return own_dev_env(tmp_path / "state", COLUMNS="200")


def test_dev_stack_serves_restarts_and_stops_cleanly(dev_env: dict[str, str], corpus: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "dev"],
        env=dev_env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out = Output(proc)
    try:
        out.wait_for(UP_BANNER, limit_s=180)
        # The embedded Postgres's command lines are not on the console (warnings would be).
        assert not any("Running commandline" in line for line in out.lines), "".join(out.lines)
        # The README's "Use it" example, from the checkout alone.
        ingest = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli",
                "ingest",
                str(corpus / "pdf/docling/multi_page.pdf"),
                str(corpus / "office"),
                "--wait",
            ],
            env=dev_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert ingest.returncode == 0, ingest.stdout + ingest.stderr
        office = [p for p in (corpus / "office").rglob("*") if p.is_file()]
        assert f"completed {1 + len(office)} · failed 0" in ingest.stdout, ingest.stdout
        search = subprocess.run(
            [sys.executable, "-m", "cli", "search", "evolution of the word processor"],
            env=dev_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert search.returncode == 0 and "multi_page.pdf" in search.stdout, search.stdout

        # A dead worker is restarted by the supervisor, and says so.
        cpu_worker = next(
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "--queue" in p.cmdline() and "cpu" in p.cmdline()
        )
        cpu_worker.kill()
        out.wait_for("cpu-worker exited with code -9; restart #1", limit_s=30)
        out.wait_for("cpu-worker restarted", limit_s=30)
    finally:
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert code == 0, "".join(out.lines[-40:])
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"left running after Ctrl-C: {[p.cmdline() for p in alive]}"
    # State stayed on disk for the next start.
    state = Path(dev_env["DOCINDEX_DATA_DIR"])
    assert (state / "temporal.db").is_file() and (state / "pgdata" / "PG_VERSION").is_file()
    # Temporal's state went through a write-ahead log (docindex/temporal_dev.py).
    with contextlib.closing(sqlite3.connect(state / "temporal.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
