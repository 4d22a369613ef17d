"""An upload's multipart body, read as it streams in.

Each file part is hashed and scanned for its format (``ByteScan``) once, as its bytes
arrive, and nothing reads it again before it is stored: a part is held in memory up to
``HOLD_BYTES``; past that it streams into the blob store as it comes, under a staging key of
its request (``t/<tenant>/incoming/<request>/<n>``), so a big file is never spooled to a
local disk and read back. So does every file once the request holds ``upload_memory_bytes``
in memory (a thousand small files are not a gigabyte of memory). A staged part becomes the
tenant's upload by a copy inside the store once it has passed every check (a hard link on a
local directory, a server-side copy on S3); the request removes its staging keys however it
ends, and a sweep of the store removes those a crash left (``docindex.gc``).

Per-file and per-request limits stop the body at the byte that passes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from docindex import intake
from docindex.blobstore import BlobStore, incoming_key
from docindex.config import Settings
from docindex.upload_check import ByteScan, clean_filename

if TYPE_CHECKING:
    from obstore import AsyncWritableFile

# A file is held in memory up to this (and while its request holds less than
# ``upload_memory_bytes``); streamed to the blob store past it (as the framework spooled
# to disk past 1 MiB before).
HOLD_BYTES = 1024 * 1024
# The store's writer sends parts of this size (S3's smallest multipart part); it is what
# a big file in flight holds in memory.
_STAGE_PART = 5 * 1024 * 1024
# A password is a form field; nothing near this long is one.
_MAX_FIELD_BYTES = 4096


class TooManyFiles(intake.Refused):
    pass


class FileTooLarge(intake.Refused):
    pass


class MalformedUpload(intake.Refused):
    """The body is not a well-formed multipart/form-data upload."""


class NotAFormField(intake.Refused):
    """A field that is no file, or a file where a field belongs (``where`` says which)."""

    def __init__(self, where: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.where = where


@dataclass
class ReceivedFile:
    """One file part, whole: its digest and size, what its format check needs, and its
    bytes (``data``) or where they were streamed (``staged_key``)."""

    filename: str
    sha256: str
    size: int
    scan: ByteScan
    data: bytes | None = None
    staged_key: str | None = None

    @contextmanager
    def opened(self, blobs: BlobStore) -> Iterator[IO[bytes]]:
        """The bytes, seekable (read only where a ZIP's directory is checked)."""
        if self.data is not None:
            yield io.BytesIO(self.data)
            return
        assert self.staged_key is not None
        with blobs.open_reader(self.staged_key) as reader:
            yield reader


@dataclass
class ReceivedUpload:
    files: list[ReceivedFile] = field(default_factory=list)
    password: str | None = None
    file_parts: int = 0
    staged: list[str] = field(default_factory=list)

    async def discard(self, blobs: BlobStore) -> None:
        """Remove what was staged (copied into place already, or refused)."""
        if self.staged:
            await blobs.delete_many(list(self.staged))
            self.staged.clear()


class _Part:
    def __init__(self, filename: str | None) -> None:
        self.filename = clean_filename(filename)
        self.sha = hashlib.sha256()
        self.scan = ByteScan()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.ended = False
        self.writer: AsyncWritableFile | None = None
        self.staged_key: str | None = None


class _Reader:
    """The parser's callbacks (synchronous) record what arrived; ``receive_upload``
    does the asynchronous work (staging writes) between the body's chunks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.upload = ReceivedUpload()
        self.parts: list[_Part] = []
        self.first_open = 0  # parts end in order: those before this one are done with
        self.held = 0  # bytes of ended parts kept in memory
        self.refusal: intake.Refused | None = None
        self.invalid: NotAFormField | None = None
        self.ended = False
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._part: _Part | None = None
        self._password: bytearray | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._part, self._password = {}, None, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        filename = options.get(b"filename")
        if name == b"files":
            if filename is None:
                self._refuse(NotAFormField(("body", "files"), "Expected a file, not a field"))
                return
            self.upload.file_parts += 1
            limit = self.settings.max_files_per_request
            if self.upload.file_parts > limit:
                self._refuse(
                    TooManyFiles(
                        f"{self.upload.file_parts} files or more in one request; the limit "
                        f"is {limit}"
                    )
                )
                return
            self._part = _Part(filename.decode("utf-8", "replace"))
            self.parts.append(self._part)
        elif name == b"password":
            if filename is not None:
                self._refuse(NotAFormField(("body", "password"), "Expected a field, not a file"))
                return
            self._password = bytearray()
        # Any other field is not ours: read past, kept nowhere.

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.refusal is not None:
            return
        if self._password is not None:
            self._password += data[start:end]
            if len(self._password) > _MAX_FIELD_BYTES:
                self._refuse(NotAFormField(("body", "password"), "The password is too long"))
                self._password = None
            return
        part = self._part
        if part is None:
            return
        piece = data if (start, end) == (0, len(data)) else data[start:end]
        part.scan.feed(piece)
        if part.scan.size > self.settings.max_upload_bytes:
            self._refuse(
                FileTooLarge(
                    f"{part.filename}: the file exceeds the limit of "
                    f"{self.settings.max_upload_bytes} bytes"
                )
            )
            return
        part.sha.update(piece)
        part.pending.append(piece)
        part.pending_bytes += len(piece)

    def _part_end(self) -> None:
        if self._part is not None:
            self._part.ended = True
        elif self._password is not None:
            try:
                self.upload.password = self._password.decode()
            except UnicodeDecodeError:
                self._refuse(NotAFormField(("body", "password"), "The password is not UTF-8"))
        self._part, self._password = None, None

    def _end(self) -> None:
        self.ended = True

    def _refuse(self, refusal: intake.Refused) -> None:
        if isinstance(refusal, NotAFormField):
            # A client's mistake, not a limit: answered once the body is read, so the
            # connection stays usable (its data is skipped meanwhile).
            self.invalid = self.invalid or refusal
        elif self.refusal is None:
            self.refusal = refusal


async def receive_upload(
    body: AsyncIterator[bytes],
    content_type: str | None,
    *,
    settings: Settings,
    blobs: BlobStore,
    tenant: str,
) -> ReceivedUpload:
    """Read a multipart upload's body to its end: its files and password. Raises an
    ``intake.Refused`` (nothing staged is left) for a malformed body, a file over its
    limit or a file past the request's limit (as soon as it comes), no file at all."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise MalformedUpload("the body must be multipart/form-data with a boundary")
    reader = _Reader(settings)
    parser = MultipartParser(boundary, reader.callbacks())
    request_id = uuid.uuid4().hex
    try:
        async for chunk in body:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise MalformedUpload(f"the multipart body cannot be parsed: {exc}") from None
            if reader.refusal is not None:
                raise reader.refusal
            await _stage(reader, blobs, tenant, request_id, final=False)
        parser.finalize()
        if not reader.ended:
            raise MalformedUpload("the multipart body ended before its closing boundary")
        if reader.invalid is not None:
            raise reader.invalid
        if not reader.parts:
            raise NotAFormField(("body", "files"), "Field required")
        await _stage(reader, blobs, tenant, request_id, final=True)
    except BaseException:
        await asyncio.shield(_abandon(reader, blobs))
        raise
    return reader.upload


async def _stage(
    reader: _Reader, blobs: BlobStore, tenant: str, request_id: str, *, final: bool
) -> None:
    """Stream what each part holds past ``HOLD_BYTES`` into its staging key; a part that
    ended becomes a ``ReceivedFile``."""
    for n in range(reader.first_open, len(reader.parts)):
        part = reader.parts[n]
        if part.writer is None and (
            part.pending_bytes > HOLD_BYTES
            or reader.held + part.pending_bytes > reader.settings.upload_memory_bytes
        ):
            part.staged_key = incoming_key(tenant, request_id, n)
            reader.upload.staged.append(part.staged_key)
            part.writer = blobs.open_writer(part.staged_key, _STAGE_PART)
        if part.writer is not None and (part.ended or part.pending_bytes >= HOLD_BYTES):
            await part.writer.write(b"".join(part.pending))
            part.pending.clear()
            part.pending_bytes = 0
        if part.ended:
            data = None
            if part.writer is not None:
                await part.writer.close()
                part.writer = None
            else:
                data = b"".join(part.pending)
                part.pending.clear()
                reader.held += len(data)
            reader.upload.files.append(
                ReceivedFile(
                    filename=part.filename,
                    sha256=part.sha.hexdigest(),
                    size=part.scan.size,
                    scan=part.scan,
                    data=data,
                    staged_key=part.staged_key,
                )
            )
            reader.first_open = n + 1
        elif final:
            raise MalformedUpload(f"{part.filename}: the file part did not end")


async def _abandon(reader: _Reader, blobs: BlobStore) -> None:
    for part in reader.parts:
        if part.writer is not None:
            # An unfinished multipart write is aborted, not completed, when it is dropped.
            part.writer = None
    await reader.upload.discard(blobs)
