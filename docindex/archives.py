"""Refuse ZIP bombs before any library opens the archive.

DOCX, PPTX and XLSX are ZIP archives. python-docx, python-pptx and openpyxl read their parts
whole, so a part that inflates to gigabytes, or a central directory of 200,000 entries
(``zipfile`` builds an object per entry), costs the reader its memory and minutes of CPU,
though every part is otherwise valid. These checks read only the central directory's fixed
fields: the end record first (the entry count, from a few bytes at the end of the file),
then each entry's declared sizes. The declared sizes bound what Python's ``zipfile`` (which
all three libraries use) will inflate: it stops at an entry's declared size.

Plain functions: no Temporal, no Docling.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import IO

from docindex.errors import TooLarge

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_EOCD_SIZE = 22
# The end record ends with a comment of at most 64 KiB.
_TAIL = _EOCD_SIZE + 0xFFFF
_CENTRAL_SIZE = 46
# Entries smaller than this are not judged by their ratio: a few KiB of zeros is no bomb.
_RATIO_FLOOR = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    """What one archive may hold (worker and API settings: docindex.config)."""

    max_entries: int = 10_000
    max_uncompressed_bytes: int = 1 << 30
    # Deflate tops out near 1030:1; text XML compresses 5-20:1, repetitive sheets ~100:1.
    max_ratio: float = 200.0


@dataclass(frozen=True)
class ArchiveSummary:
    entries: int
    uncompressed_bytes: int


def check_archive(source: bytes | IO[bytes], limits: ArchiveLimits) -> ArchiveSummary | None:
    """Raise ``TooLarge`` for an archive over ``limits``; None when ``source`` has no
    readable central directory (a damaged or truncated file: its parser reports that).
    Reads the end of the file and the central directory only; leaves a file at 0."""
    file = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    try:
        return _check(file, limits)
    finally:
        file.seek(0)


def _check(file: IO[bytes], limits: ArchiveLimits) -> ArchiveSummary | None:
    size = file.seek(0, io.SEEK_END)
    tail_at = max(0, size - _TAIL)
    file.seek(tail_at)
    tail = file.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        return None
    (entries, directory_size, directory_at) = struct.unpack_from("<xxxxxxxxxxHII", tail, at)
    if entries == 0xFFFF or 0xFFFFFFFF in (directory_size, directory_at):
        zip64 = _zip64_end(file, tail, at, tail_at)
        if zip64 is not None:
            entries, directory_size, directory_at = zip64
        elif 0xFFFFFFFF in (directory_size, directory_at):
            return None
    # The count in the end record is checked first: it costs nothing, and a 200,000-entry
    # archive is refused without reading its directory.
    _within_entries(entries, limits)
    if directory_at + directory_size > size:
        return None
    file.seek(directory_at)
    directory = file.read(directory_size)
    return _walk(directory, limits)


def _zip64_end(file: IO[bytes], tail: bytes, at: int, tail_at: int) -> tuple[int, int, int] | None:
    locator_at = at - 20
    if locator_at < 0 or tail[locator_at : locator_at + 4] != _EOCD64_LOCATOR:
        return None
    (record_at,) = struct.unpack_from("<Q", tail, locator_at + 8)
    file.seek(record_at)
    record = file.read(56)
    if len(record) < 56 or record[:4] != _EOCD64:
        return None
    entries, directory_size, directory_at = struct.unpack_from("<QQQ", record, 32)
    return entries, directory_size, directory_at


def _walk(directory: bytes, limits: ArchiveLimits) -> ArchiveSummary | None:
    """Each entry's declared sizes, in order; the count is checked again (the end record's
    count may understate the directory)."""
    entries = total = 0
    pos = 0
    while pos + _CENTRAL_SIZE <= len(directory):
        if directory[pos : pos + 4] != _CENTRAL:
            return None
        compressed, uncompressed, name_len, extra_len, comment_len = struct.unpack_from(
            "<IIHHH", directory, pos + 20
        )
        extra = directory[
            pos + _CENTRAL_SIZE + name_len : pos + _CENTRAL_SIZE + name_len + extra_len
        ]
        if 0xFFFFFFFF in (compressed, uncompressed):
            compressed, uncompressed = _zip64_sizes(extra, compressed, uncompressed)
        entries += 1
        total += uncompressed
        _within_entries(entries, limits)
        if total > limits.max_uncompressed_bytes:
            raise TooLarge(
                f"the archive inflates to more than {limits.max_uncompressed_bytes} bytes "
                "(a ZIP bomb, or a document too large to index)"
            )
        if uncompressed >= _RATIO_FLOOR and uncompressed > limits.max_ratio * max(compressed, 1):
            raise TooLarge(
                f"an archive entry inflates {uncompressed // max(compressed, 1)}:1 "
                f"(limit {limits.max_ratio:.0f}:1): a ZIP bomb"
            )
        pos += _CENTRAL_SIZE + name_len + extra_len + comment_len
    return ArchiveSummary(entries=entries, uncompressed_bytes=total)


def _within_entries(entries: int, limits: ArchiveLimits) -> None:
    if entries > limits.max_entries:
        raise TooLarge(f"the archive has more than {limits.max_entries} entries")


def _zip64_sizes(extra: bytes, compressed: int, uncompressed: int) -> tuple[int, int]:
    """The 64-bit sizes of the zip64 extra field (0x0001): uncompressed first, each present
    only where the 32-bit field is 0xFFFFFFFF."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if tag == 0x0001:
            at = 0
            if uncompressed == 0xFFFFFFFF and at + 8 <= len(body):
                (uncompressed,) = struct.unpack_from("<Q", body, at)
                at += 8
            if compressed == 0xFFFFFFFF and at + 8 <= len(body):
                (compressed,) = struct.unpack_from("<Q", body, at)
            break
        pos += 4 + length
    return compressed, uncompressed
