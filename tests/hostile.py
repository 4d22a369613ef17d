"""Hostile documents, made on the fly (nothing big is committed): each is small on disk
and expensive to read naively. Every function returns the file's bytes."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

_MB = 1 << 20

_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    b'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/{part}" ContentType="{type}"/></Types>'
)
_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships/officeDocument" Target="{part}"/></Relationships>'
)


def _bomb_part(z: zipfile.ZipFile, name: str, head: bytes, tail: bytes, inflated: int) -> None:
    """A part of ``inflated`` bytes: well-formed XML whose middle is all spaces."""
    with z.open(name, "w", force_zip64=True) as part:
        part.write(head)
        block = b" " * _MB
        for _ in range(inflated // _MB):
            part.write(block)
        part.write(tail)


def zip_bomb_docx(inflated: int = 512 * _MB) -> bytes:
    """A Word document whose every part is valid; its body inflates ~1000:1."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        main = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
        z.writestr(
            "[Content_Types].xml",
            _CONTENT_TYPES.replace(b"{part}", b"word/document.xml").replace(
                b"{type}", main.encode()
            ),
        )
        z.writestr("_rels/.rels", _RELS.replace(b"{part}", b"word/document.xml"))
        ns = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
        _bomb_part(
            z,
            "word/document.xml",
            b"<?xml version='1.0' encoding='UTF-8'?><w:document " + ns + b"><w:body><w:p><w:r>"
            b'<w:t xml:space="preserve">bomb',
            b"</w:t></w:r></w:p></w:body></w:document>",
            inflated,
        )
    return out.getvalue()


def zip_bomb_xlsx(inflated: int = 512 * _MB) -> bytes:
    """An Excel workbook whose one sheet inflates ~1000:1."""
    out = io.BytesIO()
    ns = b'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = b'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        main = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
        z.writestr(
            "[Content_Types].xml",
            _CONTENT_TYPES.replace(b"{part}", b"xl/workbook.xml").replace(b"{type}", main.encode()),
        )
        z.writestr("_rels/.rels", _RELS.replace(b"{part}", b"xl/workbook.xml"))
        z.writestr(
            "xl/workbook.xml",
            b"<workbook " + ns + b" " + rel_ns + b'><sheets><sheet name="S" sheetId="1" '
            b'r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            _RELS.replace(b"officeDocument/2006/relationships/officeDocument", b"x").replace(
                b"{part}", b"worksheets/sheet1.xml"
            ),
        )
        _bomb_part(
            z,
            "xl/worksheets/sheet1.xml",
            b"<worksheet " + ns + b'><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>',
            b"</t></is></c></row></sheetData></worksheet>",
            inflated,
        )
    return out.getvalue()


def many_entries_zip(entries: int = 200_000) -> bytes:
    """A ZIP of ``entries`` empty files (one named like a Word part), written by hand: it
    takes zipfile seconds and hundreds of MB to list."""
    local, central = io.BytesIO(), io.BytesIO()
    for i in range(entries):
        name = b"word/document.xml" if i == 0 else b"f%06d" % i
        offset = local.tell()
        local.write(
            struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
        )
        local.write(name)
        fields = (b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset)
        central.write(struct.pack("<4sHHHHHHIIIHHHHHII", *fields))
        central.write(name)
    directory_at, directory = local.tell(), central.getvalue()
    # The 16-bit count wraps, as some writers let it: the directory itself has them all.
    count = entries % 0x10000
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(directory), directory_at, 0
    )
    return local.getvalue() + directory + end


def _pdf(objects: list[bytes]) -> bytes:
    """A PDF of ``objects`` (numbered from 1; object 1 the catalog), with its xref table."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


_PAGE_TEXT = b"BT /F1 12 Tf 72 720 Td (Hostile but honest text on page one.) Tj ET"
_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _one_page_pdf(extra: list[bytes]) -> bytes:
    """A one-page PDF with text, then ``extra`` objects (numbered from 6)."""
    stream = _PAGE_TEXT
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            _FONT,
            *extra,
        ]
    )


def decompression_bomb_pdf(inflated: int = 4 << 30) -> bytes:
    """A PDF with a Flate stream that inflates to ``inflated`` bytes of zeros (a few MB on
    disk): the same fully flushed deflate block, repeated."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = squeeze.compress(b"\0" * _MB) + squeeze.flush(zlib.Z_FULL_FLUSH)
    count = inflated // _MB
    # Adler-32 of n zero bytes: a stays 1, b grows by 1 per byte.
    adler = (((count * _MB) % 65521) << 16) | 1
    body = b"\x78\x01" + block * count + squeeze.flush(zlib.Z_FINISH) + struct.pack(">I", adler)
    image = (
        b"<< /Type /XObject /Subtype /Image /Width 65536 /Height %d /ColorSpace /DeviceGray "
        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n"
        % (inflated // 65536, len(body))
    )
    return _one_page_pdf([image + body + b"\nendstream"])


def pathological_streams_pdf(size: int = 2 * _MB) -> bytes:
    """A valid one-page PDF carrying an object whose bytes are ``stream`` keywords, each a
    place where a naive scan looks back tens of KiB for its dictionary."""
    junk = b"stream\n" * (size // 7)
    return _one_page_pdf([b"<< /Length %d >>\nstream\n" % len(junk) + junk + b"\nendstream"])


def blank_pages_pdf(pages: int = 10_000) -> bytes:
    """``pages`` blank pages."""
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(pages))
    return _pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
            *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"] * pages,
        ]
    )


def single_line_text(size: int = 100 * _MB) -> bytes:
    """``size`` bytes of words and no line break."""
    return (b"word " * (size // 5 + 1))[:size]


def deeply_nested_html(depth: int = 100_000) -> bytes:
    return (
        b"<!doctype html><html><body>"
        + b"<div>" * depth
        + b"deep text"
        + b"</div>" * depth
        + b"</body></html>"
    )
