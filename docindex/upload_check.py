"""What the API refuses at the door, before anything is stored.

Only bytes that positively identify a format we do not index are refused here (an
executable, an image, an archive, or a format outside ``allowed_types``). Damaged or
unrecognisable files are accepted: they become documents that fail with a typed error
(``CorruptDocument``, ``EmptyDocument``...) in the run, where the uploader can see why.
"""

from __future__ import annotations

import zipfile
from collections.abc import Collection
from typing import IO

from docindex.errors import DocumentError
from docindex.filetypes import SNIFF_BYTES, detect_kind, ooxml_kind

_FOREIGN: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O or Java class file"),
    (b"#!", "a script"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"OggS", "an Ogg media file"),
    (b"ID3", "an MP3 file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
)


class RefusedUpload(ValueError):
    """The bytes are a known format that this service does not accept."""


def check_upload(file: IO[bytes], filename: str, allowed: Collection[str]) -> None:
    """Raise ``RefusedUpload`` for a file that must not be stored; leaves ``file`` at 0."""
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            raise RefusedUpload(f"this is {what}, not a document docindex indexes")
    kind = _kind(file, head, filename)
    file.seek(0)
    if kind is not None and kind not in allowed:
        raise RefusedUpload(f"{kind} files are not accepted here (allowed: {sorted(allowed)})")


def _kind(file: IO[bytes], head: bytes, filename: str) -> str | None:
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(file).namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return None  # damaged: the parse step reports it as a typed error
        if (kind := ooxml_kind(names)) is None:
            raise RefusedUpload("this is a ZIP archive, not a Word, PowerPoint or Excel document")
        return kind.value
    try:
        return detect_kind(head, filename).value  # text formats are told apart by the head
    except DocumentError:
        return None
