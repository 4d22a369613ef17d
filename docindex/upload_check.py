"""What the API refuses at the door, before anything is stored.

Only formats docindex indexes get in, and the bytes say which a file is, never its name:
PDF (``%PDF-`` in the first KiB), Word, PowerPoint and Excel (a ZIP holding ``word/``,
``ppt/`` or ``xl/`` parts, or an Office file encrypted with a password), and UTF-8 text,
told apart as HTML, Markdown (by name) or plain text (CSV, JSON... are plain text). Each must
also be in ``allowed_types``. Anything else (an executable, an image, an archive, a legacy
binary Office file, text in another encoding, bytes of no known format) is refused.

A document of an accepted format that is damaged, empty or encrypted gets in: it becomes a
document that fails with a typed error (``CorruptDocument``, ``EmptyDocument``,
``EncryptedDocument``) in its run, where the uploader can see why, and may be retried.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
import zipfile
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from pathlib import PurePath
from typing import IO

from docindex.archives import ArchiveLimits, check_archive
from docindex.errors import CorruptDocument, EmptyDocument, TooLarge, UnsupportedFormat
from docindex.filetypes import SNIFF_BYTES, DocumentKind, detect_kind, ooxml_kind

_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# An OOXML document encrypted with a password is an OLE2 file holding this stream.
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_OFFICE = (DocumentKind.DOCX, DocumentKind.PPTX, DocumentKind.XLSX)

# Formats people upload by mistake, named so the refusal says what the file is.
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
    """The bytes are not a format that this service accepts."""


class ByteScan:
    """What judging a file's format needs from its bytes, gathered as they stream past once
    (the API scans an upload's parts as they arrive): its head, whether it is all UTF-8
    text without NUL bytes, and whether it holds an encrypted Office package. A ZIP is
    the one format judged from more than this: its central directory, read at the end."""

    def __init__(self) -> None:
        self.size = 0
        self._head = bytearray()
        self._decoder: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")()
        self.encrypted_package = False
        self._tail = b""

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if len(self._head) < SNIFF_BYTES:
            self._head += data[: SNIFF_BYTES - len(self._head)]
        if self._decoder is not None:
            if b"\x00" in data:
                self._decoder = None
            else:
                try:
                    self._decoder.decode(data)
                except UnicodeDecodeError:
                    self._decoder = None
        if not self.encrypted_package and self._head.startswith(_OLE2):
            window = self._tail + data
            self.encrypted_package = _ENCRYPTED_PACKAGE in window
            self._tail = window[-len(_ENCRYPTED_PACKAGE) :]

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    def all_text(self) -> bool:
        """Whether everything fed was UTF-8 without NUL bytes (call once all is fed)."""
        if self._decoder is None:
            return False
        try:
            self._decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            self._decoder = None
            return False
        return True


def check_upload(
    file: IO[bytes],
    filename: str,
    allowed: Collection[str],
    archive: ArchiveLimits | None = None,
) -> str | None:
    """The file's format, or None for an empty file (its run reports it); raise
    ``RefusedUpload`` for a file that must not be stored. Leaves ``file`` at 0."""
    scan = ByteScan()
    file.seek(0)
    while block := file.read(1 << 20):
        scan.feed(block)
    file.seek(0)
    try:
        return judge(scan, filename, allowed, archive, lambda: nullcontext(file))
    finally:
        file.seek(0)


def judge(
    scan: ByteScan,
    filename: str,
    allowed: Collection[str],
    archive: ArchiveLimits | None,
    open_zip: Callable[[], AbstractContextManager[IO[bytes]]],
) -> str | None:
    """``check_upload`` for bytes already scanned; ``open_zip`` opens them, seekable,
    for a ZIP's central directory (nothing else is read again)."""
    kinds = _kinds(scan, filename, archive or ArchiveLimits(), open_zip)
    if kinds is None:
        return None
    accepted = [k for k in kinds if k in allowed]
    if not accepted:
        shown = kinds[0] if len(kinds) == 1 else "Office"
        raise RefusedUpload(f"{shown} files are not accepted here (allowed: {sorted(allowed)})")
    return accepted[0]


def _kinds(
    scan: ByteScan,
    filename: str,
    archive: ArchiveLimits,
    open_zip: Callable[[], AbstractContextManager[IO[bytes]]],
) -> tuple[str, ...] | None:
    """The formats the bytes may be (several only for an encrypted Office file)."""
    head = scan.head
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            raise RefusedUpload(f"this is {what}, not a document docindex indexes")
    if b"%PDF-" in head[:1024]:
        return (DocumentKind.PDF.value,)
    if head.startswith(b"PK\x03\x04"):
        with open_zip() as file:
            return (_ooxml(file, archive).value,)
    if head.startswith(_OLE2):
        if scan.encrypted_package:
            return tuple(k.value for k in _OFFICE)  # the run says it needs its password
        raise RefusedUpload(
            "this is a legacy binary Office file (.doc/.ppt/.xls); save it as .docx/.pptx/.xlsx"
        )
    try:
        kind = detect_kind(head, filename)
    except EmptyDocument:
        return None
    except CorruptDocument:
        return (DocumentKind.PDF.value,)  # PDF objects without their header: a damaged PDF
    except UnsupportedFormat as exc:
        raise RefusedUpload(
            f"{exc}: not PDF, Office, or UTF-8 text, so not a document docindex indexes"
        ) from exc
    # Text is judged by its head; the rest must be text too, or anything could follow it.
    if not scan.all_text():
        raise RefusedUpload("text followed by binary data: not a document docindex indexes")
    return (kind.value,)


def _ooxml(file: IO[bytes], archive: ArchiveLimits) -> DocumentKind:
    # From the central directory's fixed fields, before zipfile builds an object per
    # entry (200k entries: seconds and hundreds of MB here).
    try:
        check_archive(file, archive)
    except TooLarge as exc:
        raise RefusedUpload(str(exc)) from exc
    try:
        names = zipfile.ZipFile(file).namelist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise RefusedUpload(
            "this ZIP container cannot be read, so it is no Word, PowerPoint or Excel "
            "document docindex can index"
        ) from exc
    if (kind := ooxml_kind(names)) is None:
        raise RefusedUpload("this is a ZIP archive, not a Word, PowerPoint or Excel document")
    return kind


def clean_filename(raw: str | None) -> str:
    """Keep only a printable base name; it is shown to people, never used as a path."""
    name = PurePath((raw or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip()
    return name[:255] or "unnamed"
