"""Find damage that parsers paper over.

pdfium and python-pptx are lenient: a PDF stream that fails its checksum still renders,
and a placeholder without geometry still yields its text. Docling then "succeeds" on a
file that is corrupt, and we would index text that may be incomplete or wrong without
anyone knowing. These checks look for such damage before parsing, so a damaged file is
rejected with a reason (or, when recovery is switched on, indexed with that reason in its
metadata).

Plain functions, no Temporal, no Docling.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
import zlib
from dataclasses import dataclass

from docindex.errors import TooLarge
from docindex.filetypes import DocumentKind

log = logging.getLogger(__name__)

# A stream keyword starts the data of a stream object; "endstream" is excluded by \b.
_STREAM = re.compile(rb"\bstream(?:\r\n|\n|\r)")
_OBJECT = re.compile(rb"(\d+)\s+(\d+)\s+obj\b")
# The first filter is the one applied to the stored bytes: only then are they zlib data.
_FIRST_FILTER = re.compile(rb"/Filter\s*\[?\s*/(\w+)")
_DIRECT_LENGTH = re.compile(rb"/Length\s+(\d+)(?!\s+\d+\s+R)")
_ENCRYPT = re.compile(rb"/Encrypt\s*(?:\d+\s+\d+\s+R|<<)")
# How far back from "stream" the object header is looked for (stream dicts are small).
_HEADER_WINDOW = 64 * 1024
# Inflated output is produced in pieces of this size and dropped: memory stays flat.
_PIECE = 1 << 20
# Inflating costs about 1 s per GB of output. A file whose streams inflate to more than
# this (a decompression bomb, or a huge scan) is checked only this far; the rest is left
# to the parser's own limits rather than blowing the inspect step's timeout.
_INFLATE_BUDGET = 4 << 30


@dataclass(frozen=True)
class Damage:
    """What is wrong with a file, in words for the person who uploaded it."""

    reason: str


def find_damage(
    data: bytes, kind: DocumentKind, max_stream_bytes: int = _INFLATE_BUDGET
) -> Damage | None:
    """The first damage found in ``data``, or None. Cheap next to parsing: at most one
    inflate pass over a PDF's Flate streams, and the XML of a deck's slides. A PDF stream
    inflating past ``max_stream_bytes`` is a decompression bomb: ``TooLarge``."""
    if kind is DocumentKind.PDF:
        return _pdf_damage(data, max_stream_bytes)
    if kind is DocumentKind.PPTX:
        return _pptx_damage(data)
    return None


def _pdf_damage(data: bytes, max_stream_bytes: int) -> Damage | None:
    # Streams of an encrypted PDF are ciphertext until decrypted: they cannot be checked
    # as zlib data here, and pdfium has already vouched for the password.
    if _ENCRYPT.search(data):
        return None
    inflated = 0
    for match in _STREAM.finditer(data):
        header_at = data.rfind(b"obj", max(0, match.start() - _HEADER_WINDOW), match.start())
        if header_at < 0:
            continue
        dictionary = data[header_at : match.start()]
        first_filter = _FIRST_FILTER.search(dictionary)
        if first_filter is None or first_filter.group(1) != b"FlateDecode":
            continue
        raw = _stream_bytes(data, match.end(), dictionary)
        problem, produced = _inflate_problem(raw, max_stream_bytes)
        inflated += produced
        if produced > max_stream_bytes:
            raise TooLarge(
                f"the PDF's {_object_name(data, header_at)} inflates to more than "
                f"{max_stream_bytes} bytes: a decompression bomb"
            )
        if problem is not None:
            return Damage(f"the PDF is damaged: {_object_name(data, header_at)} {problem}")
        if inflated > _INFLATE_BUDGET:
            log.info("PDF streams inflate past %d bytes: the rest is not checked", inflated)
            return None
    return None


def _stream_bytes(data: bytes, start: int, dictionary: bytes) -> bytes:
    """A stream's stored bytes: by its direct /Length when that lands on "endstream",
    else up to the next "endstream" (an indirect or wrong length)."""
    length = _DIRECT_LENGTH.search(dictionary)
    if length is not None:
        end = start + int(length.group(1))
        if data[end : end + 32].lstrip().startswith(b"endstream"):
            return data[start:end]
    end = data.find(b"endstream", start)
    return data[start : end if end >= 0 else len(data)]


def _inflate_problem(raw: bytes, limit: int = _INFLATE_BUDGET) -> tuple[str | None, int]:
    """Inflate ``raw`` to its end, keeping none of it. Returns (what is wrong, bytes made).

    Trailing bytes after the end of the zlib data (an end-of-line before "endstream") are
    normal and ignored.
    """
    inflater = zlib.decompressobj()
    produced = 0
    pending = raw
    try:
        # CPython keeps the bytes after the end of the data in unconsumed_tail when
        # max_length is given, so stop at eof, not at an empty tail.
        while pending and not inflater.eof:
            produced += len(inflater.decompress(pending, _PIECE))
            pending = inflater.unconsumed_tail
            if produced > min(limit, _INFLATE_BUDGET):
                return None, produced
    except zlib.error as exc:
        return _describe_zlib_error(str(exc)), produced
    if not inflater.eof:
        return "has compressed data that stops before its end (truncated)", produced
    return None, produced


def _describe_zlib_error(message: str) -> str:
    if "incorrect data check" in message:
        return (
            "has compressed data that fails its Adler-32 checksum, so what it decodes to "
            "cannot be trusted"
        )
    if "incorrect header check" in message:
        return "has compressed data without a valid zlib header"
    return f"has compressed data that cannot be decoded ({message})"


def _object_name(data: bytes, header_at: int) -> str:
    start = max(0, header_at - 32)
    found = list(_OBJECT.finditer(data, start, header_at + 3))
    if not found:
        return "a stream"
    number, generation = found[-1].group(1).decode(), found[-1].group(2).decode()
    return f"object {number}" + (f" (generation {generation})" if generation != "0" else "")


# PowerPoint placeholders inherit position and size from slide layout to slide master.
# python-pptx (which Docling uses) follows the same chain; it is imported lazily because
# only PPTX needs it.
_PLACEHOLDER_NAMES = {
    "dt": "date",
    "ftr": "footer",
    "sldNum": "slide number",
    "ctrTitle": "centre title",
    "subTitle": "subtitle",
}


def _pptx_damage(data: bytes) -> Damage | None:
    """A placeholder whose position and size are defined nowhere in its inheritance chain
    (slide, then its layout by idx, then the master by type) is a broken reference: the
    deck points at a layout or master placeholder that is not there or is empty."""
    import pptx
    from pptx.exc import PackageNotFoundError

    try:
        deck = pptx.Presentation(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        # A package python-pptx cannot open is Docling's to reject, with its own message.
        log.debug("python-pptx could not open the deck: %s", exc)
        return None
    for number, slide in enumerate(deck.slides, start=1):
        for shape in slide.placeholders:
            if None not in (shape.left, shape.top, shape.width, shape.height):
                continue
            fmt = shape.placeholder_format
            raw_type = fmt.element.get("type", "obj")
            what = _PLACEHOLDER_NAMES.get(raw_type, raw_type)
            layout_shape = slide.slide_layout.placeholders.get(idx=fmt.idx)
            if layout_shape is None:
                why = f"its slide layout has no placeholder with idx {fmt.idx}"
            else:
                why = (
                    f"neither it, its slide layout's placeholder nor the slide master "
                    f"defines one (the master has no {what} placeholder to inherit from)"
                    if _master_counterpart(layout_shape) is None
                    else "neither it, its slide layout nor its slide master defines one"
                )
            return Damage(
                f"the PowerPoint file is malformed: slide {number}, {what} placeholder "
                f"{shape.name!r} (idx {fmt.idx}) has no position or size: {why}"
            )
    return None


def _master_counterpart(layout_shape: object) -> object | None:
    try:
        return layout_shape._base_placeholder  # type: ignore[attr-defined]
    except (AttributeError, KeyError):
        return None
