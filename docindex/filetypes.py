"""Recognise a document's format from its bytes, never from its name."""

from __future__ import annotations

import io
import zipfile
from enum import StrEnum

from docindex.errors import CorruptDocument, EmptyDocument, EncryptedDocument, UnsupportedFormat

SNIFF_BYTES = 8192


class DocumentKind(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    PPTX = "pptx"
    XLSX = "xlsx"
    HTML = "html"
    MARKDOWN = "md"
    TEXT = "txt"


_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
_OOXML_PARTS = {"word/": DocumentKind.DOCX, "ppt/": DocumentKind.PPTX, "xl/": DocumentKind.XLSX}
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body")


def detect_kind(data: bytes, filename: str = "") -> DocumentKind:
    """Return the format of ``data``; raise a typed error when it is not one we index.

    The file name is only a tie-breaker between plain text and Markdown, which have no magic.
    """
    if not data:
        raise EmptyDocument("the file is empty (0 bytes)")
    head = data[:SNIFF_BYTES]
    # PDF readers accept the header anywhere in the first 1 KiB.
    if b"%PDF-" in head[:1024]:
        return DocumentKind.PDF
    if head.startswith(ZIP_MAGIC):
        return _ooxml_kind(data)
    if head.startswith(_OLE2_MAGIC):
        # Password-protected OOXML files are wrapped in an OLE2 container ("EncryptedPackage").
        if "EncryptedPackage".encode("utf-16-le") in data:
            raise EncryptedDocument("the Office document is password-protected")
        raise UnsupportedFormat(
            "legacy binary Office format (.doc/.ppt/.xls); save it as .docx/.pptx/.xlsx"
        )
    text = _as_text(head)
    if text is None:
        if _looks_like_headless_pdf(head):
            raise CorruptDocument("PDF objects without a %PDF- header: the file is damaged")
        raise UnsupportedFormat("unrecognised binary format")
    lowered = text.lstrip().lower().encode()
    if any(lowered.startswith(m) for m in _HTML_MARKERS) or b"<html" in lowered[:512]:
        return DocumentKind.HTML
    if filename.lower().endswith((".md", ".markdown")):
        return DocumentKind.MARKDOWN
    return DocumentKind.TEXT


def _looks_like_headless_pdf(head: bytes) -> bool:
    return b" obj" in head and (b"endobj" in head or b"/Type" in head)


def _ooxml_kind(data: bytes) -> DocumentKind:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except zipfile.BadZipFile as exc:
        raise UnsupportedFormat(f"damaged ZIP container: {exc}") from exc
    kind = ooxml_kind(names)
    if kind is None:
        raise UnsupportedFormat("ZIP archive that is not a Word, PowerPoint or Excel document")
    return kind


def ooxml_kind(names: list[str]) -> DocumentKind | None:
    """Word, PowerPoint or Excel, from the member names of a ZIP; None for another ZIP."""
    for prefix, kind in _OOXML_PARTS.items():
        if any(n.startswith(prefix) for n in names):
            return kind
    return None


def _as_text(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the sniff boundary is still text.
        if exc.start >= len(head) - 4:
            return head[: exc.start].decode("utf-8")
        return None
