"""No page silently lost (issue #15): pages are classified after the parse, pages with ink
and no readable text are OCRed into the document with their page and box, and every PDF
gets a quality report, stored, shown by the API and the run status, with a warning naming
the pages that gave no text."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import asyncpg
import httpx
import pypdfium2
import pytest
from PIL import Image
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from docindex import repository
from docindex.config import Settings
from docindex.database import create_pool
from docindex.errors import EmptyDocument
from docindex.ids import document_workflow_id, run_workflow_id
from docindex.pipeline.metadata import quality_report
from docindex.pipeline.ocr import OcrLine, bundled_models, ocr_pages, reading_order
from docindex.pipeline.pages import PageClass, classify_text, page_ranges_text, score_text
from docindex.pipeline.parsing import DocumentParser, apply_ocr, page_classes
from docindex.search_attributes import ensure_registered
from workflows.indexing_contract import RunSummary

from .helpers import DATA, app_with, wait_for_run
from .test_cancel import start_run

CRAZYONES = DATA / "pdf/pypdf/crazyones.pdf"
MULTI_PAGE = DATA / "pdf/docling/multi_page.pdf"

ENGLISH = (
    "Here's to the crazy ones. The misfits. The rebels. The troublemakers. The round pegs "
    "in the square holes. The ones who see things differently. They're not fond of rules."
)
GERMAN = (
    "Dieses Skript wurde im Wintersemester 2013/2014 geschrieben. Es beinhaltet die "
    "Mitschriften aus der Vorlesung sowie die Mitschriften einiger Übungen und Tutorien."
)
CODE = (
    "CREATE PERMISSION ACCESS_CUSTOMER_ROW_RULES ON CUSTOMERS FOR ROWS WHERE "
    "VERIFY_GROUP_FOR_USER(SESSION_USER, 'SALES') = 1 ENFORCED FOR ALL ACCESS ENABLE;"
)


def shifted(text: str) -> str:
    """Glyph ids of a subset font read as characters: each letter 29 code points down
    (``The`` becomes ``7KH``), what a font with no ToUnicode map gives."""
    return "".join(chr(ord(c) - 29) if c.isalpha() else c for c in text)


def punctuation_glyphs(text: str) -> str:
    """Glyphs numbered in order of first use from '!' (the space one of them), each line's
    end kept: the ``!"#$%&'()*+`` soup of a subset font read as ASCII."""
    codes: dict[str, str] = {}
    return "\n".join(
        "".join(codes.setdefault(c, chr(0x21 + len(codes))) for c in line)
        for line in textwrap.wrap(text, 60)
    )


@pytest.mark.parametrize(
    "text", [ENGLISH, GERMAN, CODE, "\ufffd Bullet one\n\ufffd Bullet two\n" + ENGLISH * 2]
)
def test_readable_text_is_text(text: str):
    assert classify_text(text) is PageClass.TEXT, score_text(text)


@pytest.mark.parametrize(
    "text",
    [
        shifted(ENGLISH),
        shifted(GERMAN),
        punctuation_glyphs(ENGLISH),
        "\ufffd\ufffd\ufffd \ufffd\ufffd\ufffd\ufffd\ufffd " * 20,
        "(cid:12)(cid:7)(cid:44) (cid:3)(cid:9) " * 10,
        "GLYPH<c=3,font=/AAAAAH+Calibri>GLYPH<c=17,font=/AAAAAH+Calibri> " * 10,
        # A readable heading over a body of lost glyphs is still an unreadable page.
        "Introduction\n" + "\x04\x05\x06\x07\x05\x08 \x0b\x0c\r\x0e" * 12,
    ],
    ids=["shifted", "shifted-de", "punctuation", "replacement", "cid", "glyph-names", "controls"],
)
def test_garbage_text_layer_is_unreadable(text: str):
    assert classify_text(text) is PageClass.UNREADABLE, score_text(text)


def test_too_little_text_is_no_text():
    assert classify_text("") is PageClass.NO_TEXT
    assert classify_text("  17 \n") is PageClass.NO_TEXT


def test_ocr_models_ship_in_the_wheel():
    # Docling's RapidOCR (standard pipeline) is pointed at them: nothing to download.
    assert all(path.is_file() for path in bundled_models().values())


def test_page_ranges_text():
    assert page_ranges_text([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"


def test_reading_order_reads_columns_one_after_the_other():
    def line(text: str, left: float, top: float) -> OcrLine:
        return OcrLine(text=text, l=left, r=left + 200, t=top, b=top - 10, score=1.0)

    # A heading over two columns whose lines sit at the same heights.
    lines = [line("heading", 50, 800)] + [
        line(f"{side}{row}", x, 760 - row * 14)
        for row in range(3)
        for side, x in (("left", 50), ("right", 300))
    ]
    assert [x.text for x in reading_order(lines)] == [
        "heading",
        "left0",
        "left1",
        "left2",
        "right0",
        "right1",
        "right2",
    ]


def image_pdf(*pages: Image.Image, dpi: int = 150) -> bytes:
    """A PDF of images only: no text layer at all."""
    buffer = io.BytesIO()
    first, *rest = (p.convert("RGB") for p in pages)
    first.save(buffer, format="PDF", resolution=dpi, save_all=True, append_images=rest)
    return buffer.getvalue()


def rendered(pdf: Path, page: int = 0, dpi: int = 150) -> Image.Image:
    return pypdfium2.PdfDocument(pdf)[page].render(scale=dpi / 72).to_pil()


def scanned_crazyones(blank_page: bool = True) -> bytes:
    """crazyones.pdf as a scan (the page as an image), then a blank page."""
    page = rendered(CRAZYONES)
    blank = Image.new("RGB", page.size, "white")
    return image_pdf(page, *([blank] if blank_page else []))


def text_then_scan() -> bytes:
    """A page with a text layer (multi_page.pdf's first), then a scanned page."""
    out = pypdfium2.PdfDocument.new()
    out.import_pages(pypdfium2.PdfDocument(MULTI_PAGE), [0])
    out.import_pages(pypdfium2.PdfDocument(scanned_crazyones(blank_page=False)), [0])
    buffer = io.BytesIO()
    out.save(buffer)
    return buffer.getvalue()


def test_scanned_page_is_ocred_into_the_document_with_its_page_and_box():
    parser = DocumentParser("native", ocr="auto")
    data = scanned_crazyones()
    parsed = parser.parse(data, "scan.pdf")
    assert page_classes(parsed.document) == {1: PageClass.NO_TEXT, 2: PageClass.BLANK}
    assert parser.pages_to_ocr(parsed.document) == [1]

    [page] = ocr_pages(data, [1])
    text = " ".join(line.text for line in page.lines)
    assert "misfits" in text and "troublemakers" in text
    # The title's box, in PDF points from the bottom left, is where the text layer of the
    # original has it.
    title = next(line for line in page.lines if "Crazy" in line.text)
    original = pypdfium2.PdfDocument(CRAZYONES)[0]
    height = original.get_height()
    textpage = original.get_textpage()
    found = textpage.search("Crazy").get_next()
    assert found is not None
    left, bottom, _right, top = textpage.get_charbox(found[0])
    assert title.l - 5 <= left <= title.r and title.b - 5 <= bottom <= top <= title.t + 5
    assert 0 < title.b < title.t < height

    apply_ocr(parsed.document, [page])
    items = [i for i in parsed.document.texts if i.prov]
    assert items and {i.prov[0].page_no for i in items} == {1}
    quality = quality_report(parsed.document)
    assert quality is not None
    assert (quality.pages, quality.ocr, quality.empty, quality.blank_pages) == (2, 1, 1, [2])
    assert quality.warning == "no text on page 2 (blank: 2)"


def test_ocr_with_one_thread_reads_what_it_reads_with_one_per_core():
    # Parse processes OCR at once with their share of the cores (threads_per_process).
    data = scanned_crazyones(blank_page=False)
    [every_core] = ocr_pages(data, [1])
    [one_thread] = ocr_pages(data, [1], threads=1)
    assert [line.text for line in one_thread.lines] == [line.text for line in every_core.lines]
    assert len(one_thread.lines) > 3


_COUNT_THREADS = """
import os, sys
from docindex.pipeline.ocr import ocr_pages
ocr_pages(sys.stdin.buffer.read(), [1], threads=int(sys.argv[1]))
print(len(os.listdir("/proc/self/task")))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: one thread either way")
def test_ocr_given_one_thread_starts_no_thread_per_core():
    # A fresh process each: onnxruntime's pools are per session and live as long as it.
    data = scanned_crazyones(blank_page=False)

    def threads(n: int) -> int:
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_THREADS, str(n)],
            input=data,
            capture_output=True,
            check=True,
            timeout=120,
        )
        return int(done.stdout.split()[-1])

    assert threads(1) < threads(0)


def test_unreadable_text_layer_is_dropped_and_left_to_ocr():
    # crazyones.pdf's fonts come out of Docling's parser as U+FFFD only.
    parser = DocumentParser("native", ocr="auto")
    parsed = parser.parse(CRAZYONES.read_bytes(), "crazyones.pdf")
    assert page_classes(parsed.document) == {1: PageClass.UNREADABLE}
    assert not parsed.document.texts
    assert parser.pages_to_ocr(parsed.document) == [1]
    # OCR off: nothing of it is indexed, and the error says why.
    with pytest.raises(EmptyDocument, match="page 1 has no readable text layer and OCR is off"):
        DocumentParser("native", ocr="off").parse(CRAZYONES.read_bytes(), "crazyones.pdf")


def test_force_ocrs_every_page_off_none():
    data = text_then_scan()
    assert DocumentParser("native", ocr="force").pages_to_ocr(
        DocumentParser("native").parse(data, "mixed.pdf").document
    ) == [1, 2]
    off = DocumentParser("native", ocr="off")
    assert off.pages_to_ocr(off.parse(data, "mixed.pdf").document) == []


async def chunks_of(settings: Settings, document_id: str) -> list[tuple[str, list[int]]]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT text, pages FROM chunks WHERE document_id = $1 ORDER BY ordinal",
            uuid.UUID(document_id),
        )
    finally:
        await conn.close()
    return [(r["text"], list(r["pages"])) for r in rows]


async def test_scans_and_unreadable_pages_are_ocred_and_reported(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    scan = scanned_crazyones()
    files = [
        ("files", ("scan.pdf", scan, "application/pdf")),
        # Its own bytes: no artifact of another test is reused.
        ("files", ("crazyones.pdf", CRAZYONES.read_bytes() + b"\n% ocr\n", "application/pdf")),
    ]
    accepted = (await api.post("/v1/documents", files=files)).json()
    seen: list[dict] = []
    run = await wait_for_run(api, accepted["run_id"], seen=seen)
    assert run["status"] == "completed", run
    # While OCR ran, the status said so: a step of its own.
    assert any(d.get("step") == "ocr" for s in seen for d in s["documents"]), seen
    by_name = {d["filename"]: d for d in run["documents"]}

    scanned = by_name["scan.pdf"]
    assert scanned["quality"]["ocr"] == 1 and scanned["quality"]["empty_pages"] == [2]
    assert scanned["warning"] == "no text on page 2 (blank: 2)"
    detail = (await api.get(f"/v1/documents/{scanned['document_id']}")).json()
    assert detail["metadata"]["quality"] == detail["quality"]
    assert detail["quality"] | {"warning": None} == {
        "pages": 2,
        "text": 0,
        "ocr": 1,
        "unreadable": 0,
        "empty": 1,
        "empty_pages": [2],
        "blank_pages": [2],
        "unreadable_pages": [],
        "tables": 0,
        "warning": None,
    }
    chunks = await chunks_of(settings, scanned["document_id"])
    assert any("misfits" in text and pages == [1] for text, pages in chunks), chunks

    # The unreadable text layer was replaced by OCR's text: no glyph garbage is stored.
    readable = by_name["crazyones.pdf"]
    assert readable["quality"]["ocr"] == 1 and readable["warning"] is None
    chunks = await chunks_of(settings, readable["document_id"])
    assert chunks and all("\ufffd" not in text for text, _ in chunks)
    assert any("troublemakers" in text for text, _ in chunks)

    hits = (await api.post("/v1/search", json={"query": "the misfits and the rebels"})).json()
    assert hits["results"][0]["document_id"] in {scanned["document_id"], readable["document_id"]}


async def test_with_ocr_off_pages_without_text_are_named_never_silent(
    settings: Settings, client: Client, workers: None
) -> None:
    async with app_with(settings, client, ocr="off") as (_app, http):
        files = [
            ("files", ("mixed.pdf", text_then_scan(), "application/pdf")),
            ("files", ("scan.pdf", scanned_crazyones() + b"\n% off\n", "application/pdf")),
        ]
        accepted = (await http.post("/v1/documents", files=files)).json()
        run = await wait_for_run(http, accepted["run_id"])
    assert run["pipeline"]["parser"]["ocr"] == "off"
    by_name = {d["filename"]: d for d in run["documents"]}
    mixed = by_name["mixed.pdf"]
    assert mixed["status"] == "completed", run
    assert (mixed["quality"]["text"], mixed["quality"]["empty_pages"]) == (1, [2])
    assert mixed["warning"] == "no text on page 2"
    scan = by_name["scan.pdf"]
    assert (scan["status"], scan["error_type"]) == ("failed", "EmptyDocument")
    assert "page 1 has no readable text layer and OCR is off" in scan["error"]


async def test_a_split_scan_parses_by_page_ranges_then_ocrs_in_batches(
    client: Client, settings: Settings, workers: None
) -> None:
    """A big scan keeps its page ranges (text layer and page classes per range, on any CPU
    worker), then OCR runs as batches of its own: only the pages that need it."""
    await ensure_registered(client, settings.temporal_namespace)
    page = rendered(CRAZYONES)
    blank = Image.new("RGB", page.size, "white")
    data = image_pdf(page, blank, page.rotate(180), page) + b"\n% split\n"
    run_id, (document_id,) = await start_run(
        client,
        settings,
        [("scan.pdf", data)],
        split_pdf_pages=1,
        range_pages=2,
        ocr_batch_pages=2,
    )
    run = client.get_workflow_handle(run_workflow_id(run_id), result_type=RunSummary)
    assert (await asyncio.wait_for(run.result(), 300)).completed == 1

    history = await client.get_workflow_handle(
        document_workflow_id(run_id, document_id)
    ).fetch_history()
    steps = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert steps.count("parse_page_range") == 2 and "merge_parsed_parts" in steps
    # Pages 1, 3, 4 need OCR (page 2 is blank): two batches of at most two pages.
    assert steps.count("ocr_pages") == 2 and steps.count("apply_ocr") == 1

    pool = await create_pool(settings.database_url or "")
    try:
        row = await repository.get_document(pool, document_id)
    finally:
        await pool.close()
    assert row is not None
    quality = row.metadata["quality"]
    assert (quality["pages"], quality["ocr"], quality["empty_pages"]) == (4, 3, [2])
    chunks = await chunks_of(settings, document_id)
    pages = {p for _, chunk_pages in chunks for p in chunk_pages}
    assert {1, 4} <= pages and 2 not in pages


def test_cli_status_shows_each_documents_quality_and_warning():
    from datetime import UTC, datetime

    from cli import main as cli
    from docindex.api_models import DocumentStatus, RunStatus

    quality = {"pages": 3, "text": 1, "ocr": 1, "unreadable": 0, "empty": 1, "tables": 2}
    # The CLI reads runs through docindex.client, as the API's models.
    run = RunStatus(
        run_id="r",
        workflow_id="index-run/r",
        status="completed",
        source="database",
        completed=1,
        failed=0,
        cancelled=0,
        running=0,
        document_count=1,
        created_at=datetime.now(UTC),
        documents=[
            DocumentStatus(
                document_id="d",
                filename="scan.pdf",
                status="completed",
                pages=3,
                chunk_count=4,
                quality=quality,
                warning="no text on page 3 (blank: 3)",
            )
        ],
    )
    with cli.console.capture() as captured:
        cli._print_run(run)
    shown = captured.get()
    assert "quality" in shown  # a column of the table, which wraps its cells
    assert cli._quality(run.documents[0]) == "1 text · 1 ocr · 1 empty · 2 tables"
    ocr = DocumentStatus(
        document_id="d",
        filename="scan.pdf",
        status="running",
        step="ocr",
        ocr_pages=9,
        ocr_pages_done=2,
    )
    assert cli._quality(ocr) == "OCR 2/9 pages"
    assert "warning scan.pdf: no text on page 3 (blank: 3)" in shown


async def test_index_local_ocrs_as_the_workflow_does(settings: Settings, tmp_path: Path) -> None:
    from cli.local_index import LocalIndexer

    source = tmp_path / "scan.pdf"
    source.write_bytes(scanned_crazyones() + b"\n% local\n")
    pool = await create_pool(settings.database_url or "", max_size=2)
    try:
        run = await LocalIndexer(settings, pool).index([source])
        [doc] = run.documents
        assert doc.status == "completed", doc.error
        row = await repository.get_document(pool, doc.document_id)
    finally:
        await pool.close()
    assert row is not None
    assert row.metadata["quality"]["ocr"] == 1 and row.metadata["quality"]["empty_pages"] == [2]


def test_the_layout_pipeline_names_its_ocr_engine_and_builds_it_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Docling's automatic engine choice skips OCR silently when it finds no engine: the
    standard pipeline gets RapidOCR by name, with the models of the rapidocr wheel, which
    load with nothing under DOCLING_ARTIFACTS_PATH."""
    from docling.datamodel.accelerator_options import AcceleratorOptions
    from docling.datamodel.pipeline_options import PdfPipelineOptions, RapidOcrOptions
    from docling.models.stages.ocr.rapid_ocr_model import RapidOcrModel

    monkeypatch.setenv("DOCLING_ARTIFACTS_PATH", str(tmp_path))
    options = DocumentParser("standard", ocr="auto")._pdf_options
    assert isinstance(options, PdfPipelineOptions) and options.do_ocr
    assert isinstance(options.ocr_options, RapidOcrOptions)
    model = RapidOcrModel(
        enabled=True,
        artifacts_path=tmp_path,
        options=options.ocr_options,
        accelerator_options=AcceleratorOptions(),
    )
    assert model.enabled
    forced = DocumentParser("standard", ocr="force")._pdf_options
    assert isinstance(forced, PdfPipelineOptions) and forced.ocr_options.force_full_page_ocr
    off = DocumentParser("standard", ocr="off")._pdf_options
    assert isinstance(off, PdfPipelineOptions) and not off.do_ocr
