"""The parse cage (docindex/cage.py) and the archive checks, without Temporal: each limit
stops its child with a typed error, a cancelled call's child dies at once, and the cage
goes on serving. The whole hostile corpus through real workers is tests/test_hostile.py."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from docindex.archives import ArchiveLimits, check_archive
from docindex.cage import Cage, CageLimits
from docindex.errors import EmptyDocument, ParseKilled, ResourceLimit, TooLarge
from docindex.filetypes import DocumentKind
from docindex.pipeline.damage import find_damage
from docindex.upload_check import RefusedUpload, check_upload

from . import cage_targets as targets
from . import hostile


@pytest_asyncio.fixture
async def cage() -> AsyncIterator[Cage]:
    cage = Cage(CageLimits(processes=1, memory_bytes=1 << 30, cpu_s=2, stall_s=2))
    yield cage
    cage.close()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped is dead too
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


async def test_progress_and_typed_errors_cross_and_the_child_is_reused(cage: Cage) -> None:
    seen: list[dict[str, int]] = []
    alive: list[int] = []
    pid = await cage.call(
        targets.pages, 3, on_progress=seen.append, on_alive=lambda: alive.append(1)
    )
    assert seen == [{"pages_done": n, "pages_total": 3} for n in (1, 2, 3)]
    assert len(alive) >= 3
    with pytest.raises(EmptyDocument):
        await cage.call(targets.empty)
    # A document error says nothing against the process: it serves the next call.
    assert await cage.call(targets.pages, 1) == pid


async def test_a_child_serves_many_small_calls_and_is_replaced_after_its_share_of_work() -> None:
    cage = Cage(CageLimits(processes=1, memory_bytes=1 << 30, work_cpu_s=1.5))
    try:
        # Many small documents: one child serves them all (a new one would import Docling
        # again), well past the 200 calls it used to be replaced after.
        pids = {await cage.call(targets.pages, 1) for _ in range(250)}
        assert len(pids) == 1
        first = pids.pop()
        assert await cage.call(targets.burn, 1.5) == first
        # Over its budget of work: the next call has a new child.
        assert await cage.call(targets.pages, 1) != first
    finally:
        cage.close()


async def test_a_retired_child_is_replaced_by_one_warmed_in_the_background() -> None:
    """The child that takes a retired one's place runs what warm() ran before its first
    call (Docling imported, the parser built), started when the old one retired, so the
    next document does not wait for it."""
    cage = Cage(CageLimits(processes=1, memory_bytes=1 << 30, work_cpu_s=0.5))
    try:
        await cage.warm(targets.warm_up, 2.0)
        first, warmed_by = await cage.call(targets.warmed)
        assert warmed_by == first
        assert await cage.call(targets.burn, 0.6) == first  # over its budget: retired
        await asyncio.sleep(4.0)  # the replacement starts and warms meanwhile
        started = time.monotonic()
        second, warmed_by = await cage.call(targets.warmed)
        assert second != first and warmed_by == second
        assert time.monotonic() - started < 1.5  # it did not warm now (2 s)
        assert _gone(first)
    finally:
        cage.close()


@pytest.mark.parametrize(
    ("target", "error", "within_s"),
    [
        (targets.spin, ResourceLimit, 10),  # 2 s of CPU, the rest is load on the test host
        (targets.hoard, ResourceLimit, 10),
        (targets.crash, ParseKilled, 10),
        (targets.sleep, ParseKilled, 10),  # silent for stall_s
    ],
)
async def test_a_limit_stops_the_child_with_a_typed_error_and_the_cage_carries_on(
    cage: Cage, target: object, error: type[Exception], within_s: float
) -> None:
    started = time.monotonic()
    with pytest.raises(error):
        await cage.call(target, *((600,) if target is targets.sleep else ()))  # type: ignore[arg-type]
    assert time.monotonic() - started < within_s
    assert isinstance(await cage.call(targets.pages, 1), int)


async def test_a_cancelled_call_kills_its_child_at_once(cage: Cage) -> None:
    pid = await cage.call(targets.pages, 1)
    call = asyncio.create_task(cage.call(targets.sleep, 600, stall_s=600))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert _gone(pid)
    assert await cage.call(targets.pages, 1) != pid


def test_zip_bombs_and_huge_directories_are_refused_from_the_directory_alone(
    corpus: Path,
) -> None:
    limits = ArchiveLimits()
    for bomb in (hostile.zip_bomb_docx(64 << 20), hostile.zip_bomb_xlsx(64 << 20)):
        with pytest.raises(TooLarge, match="ZIP bomb"):
            check_archive(bomb, limits)
        with pytest.raises(TooLarge, match="inflates to more than"):
            check_archive(bomb, ArchiveLimits(max_uncompressed_bytes=32 << 20, max_ratio=1e6))
    many = hostile.many_entries_zip()
    started = time.monotonic()
    with pytest.raises(TooLarge, match="more than 10000 entries"):
        check_archive(many, limits)
    assert time.monotonic() - started < 0.5  # zipfile needs over a second to list it
    # The API refuses them at the door, with the reason.
    for data in (many, hostile.zip_bomb_docx(64 << 20)):
        with pytest.raises(RefusedUpload, match=r"entries|ZIP bomb"):
            check_upload(io.BytesIO(data), "x.docx", ["docx", "xlsx"])
    # Real Office files pass.
    office = [p for p in (corpus / "office").rglob("*") if p.suffix in (".docx", ".pptx", ".xlsx")]
    assert len(office) >= 3
    for path in office:
        assert check_archive(path.read_bytes(), limits) is not None, path


def test_a_pdf_stream_that_inflates_past_the_limit_is_a_bomb() -> None:
    bomb = hostile.decompression_bomb_pdf(256 << 20)
    with pytest.raises(TooLarge, match="decompression bomb"):
        find_damage(bomb, DocumentKind.PDF, 128 << 20)
    assert find_damage(bomb, DocumentKind.PDF, 512 << 20) is None
