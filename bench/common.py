"""What every figure shares: the corpus, synthetic inputs, percentiles, uploads, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.parse_quality import MissingInput, default_corpus, require
from docindex.filetypes import DocumentKind, detect_kind

__all__ = ["MissingInput", "default_corpus", "require"]

# Inputs the service is meant to index; broken/ holds inputs it must refuse, and the
# reference texts are not documents.
CORPUS_DIRS = ("pdf", "office", "olmocr_bench/pdfs")
BIG_PDF = "pdf/pypdf_samples/GeoTopo-komprimiert.pdf"
ONE_PAGE_PDF = "pdf/docling/2305.03393v1-pg9.pdf"


def corpus_files(corpus: Path) -> list[Path]:
    files: list[Path] = []
    for sub in CORPUS_DIRS:
        files.extend(p for p in sorted((corpus / sub).rglob("*")) if p.is_file())
    if not files:
        raise MissingInput(f"no documents in {corpus} ({', '.join(CORPUS_DIRS)})")
    return files


def big_pdfs(corpus: Path, into: Path, count: int = 3, min_pages: int = 201) -> list[Path]:
    """``count`` PDFs of at least ``min_pages`` pages each, made of the corpus's own PDFs
    (``pdf/``), whole, one after another, each big PDF starting at another one of them. The
    corpus holds one PDF over 100 pages (GeoTopo, 117); these are over the native pipeline's
    split threshold (200), so the service parses them as checkpointed page ranges."""
    import pypdfium2 as pdfium

    sources: list[tuple[Path, int]] = []
    for path in sorted((corpus / "pdf").rglob("*.pdf")):
        try:
            sources.append((path, len(pdfium.PdfDocument(path))))
        except pdfium.PdfiumError:  # encrypted or damaged: not a page source
            continue
    if not sources or sum(n for _, n in sources) == 0:
        raise MissingInput(f"no PDFs in {corpus / 'pdf'}")
    into.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for i in range(count):
        big, pages, k = pdfium.PdfDocument.new(), 0, i * len(sources) // count
        while pages < min_pages:
            path, n = sources[k % len(sources)]
            big.import_pages(pdfium.PdfDocument(path))
            pages, k = pages + n, k + 1
        target = into / f"big-{i + 1}-{pages}p.pdf"
        big.save(target)
        out.append(target)
    return out


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def unique_bytes(data: bytes, name: str) -> bytes:
    """The same document with different bytes, so nothing earlier is reused or deduplicated.
    PDFs take a trailing comment; other formats are used as they are (give them a fresh
    tenant and an empty artifact cache instead)."""
    if detect_kind(data, name) is DocumentKind.PDF:
        return data + f"\n% bench {uuid.uuid4()}\n".encode()
    return data


_WORDS = (
    "orchestration durable workflow document index vector search chunk embedding parse "
    "temporal postgres latency throughput worker queue activity retry history signal page "
    "table figure heading section summary model token batch memory cluster recall"
).split()


def synthetic_text(seed: int, lines: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14))) + f" {seed}-{i}."
        for i in range(lines)
    ]


def synthetic_pdf(seed: int, pad_to: int = 0) -> bytes:
    """A valid one-page text PDF; ``pad_to`` bytes in all with an unreferenced stream (the
    page stays cheap to parse, the upload is as big as asked)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 10 Tf 50 760 Td 13 TL\n"
    content += "\n".join(f"({esc(line)}) '" for line in synthetic_text(seed)) + "\nET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets: list[int] = []

    def add(body: bytes) -> None:
        offsets.append(len(out))
        out.extend(f"{len(offsets)} 0 obj\n".encode() + body + b"\nendobj\n")

    for body in objects:
        add(body)
    pad = max(0, pad_to - len(out) - 400)
    if pad:
        filler = random.Random(seed).randbytes(pad // 2).hex().encode()[:pad]
        add(f"<< /Length {len(filler)} >>\nstream\n".encode() + filler + b"\nendstream")
    xref = len(out)
    out.extend(f"xref\n0 {len(offsets) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.extend(f"{off:010d} 00000 n \n".encode())
    out.extend(
        f"trailer\n<< /Size {len(offsets) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def tiny_markdown(seed: int) -> bytes:
    lines = synthetic_text(seed, lines=3)
    return (f"# Note {seed}\n\n" + "\n".join(lines) + "\n").encode()


def load_run_files(seed: int, count: int) -> list[tuple[str, bytes]]:
    """What ``make load``'s run indexes: half small PDFs, half Markdown notes (every format
    path, each cheap to index)."""
    return [
        (f"doc-{i}.pdf", synthetic_pdf(seed + i))
        if i % 2
        else (f"doc-{i}.md", tiny_markdown(seed + i))
        for i in range(count)
    ]


async def upload(
    http: httpx.AsyncClient,
    files: Sequence[tuple[str, bytes]],
    headers: dict[str, str],
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    response = await http.post(
        "/v1/documents",
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
        headers=headers,
        timeout=timeout_s,
    )
    if response.status_code not in (200, 202):
        raise UploadRefused(response.status_code, response.text[:500])
    return response.json()


class UploadRefused(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status


# ---------------------------------------------------------------------- memory


@dataclass
class PeakRss:
    """Peak resident memory of processes (each with its children) over a ``with`` block,
    from the kernel's own high-water mark (``VmHWM``), reset on entry through
    ``/proc/<pid>/clear_refs``: no sampling while the block runs. (Sampling every 100 ms,
    with the process tree walked each time, cost the bench about 4 s of CPU per corpus
    pass, on the cores the service was being timed on.) Where the reset is refused the
    figure is the process's peak since it started."""

    pids: dict[str, int]
    peaks: dict[str, int] = field(default_factory=dict)

    def __enter__(self) -> PeakRss:
        for pid in self.pids.values():
            for each in _tree(pid):
                with contextlib.suppress(OSError):
                    Path(f"/proc/{each}/clear_refs").write_text("5")
        return self

    def __exit__(self, *_: object) -> None:
        for name, pid in self.pids.items():
            self.peaks[name] = sum(proc_status_bytes(each, "VmHWM:") for each in _tree(pid))


def _tree(pid: int) -> list[int]:
    try:
        import psutil

        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except Exception:  # no psutil, or the process is gone
        return [pid]


def proc_status_bytes(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pids: dict[str, int], postgres_under: Path | None = None) -> dict[str, float]:
    """User + system CPU seconds so far of each named process (with its children, those
    that have exited too: a worker's parse process replaced mid-pass), of this
    process (``bench``: the in-process pass runs here), of the Temporal dev server this
    process started and of every Postgres process (only the server whose data directory is
    under ``postgres_under``, and its backends, when given: on a shared machine other
    people's databases are busy too). Empty without psutil."""
    try:
        import psutil
    except ImportError:
        return {}

    def spent(procs: list[psutil.Process], reaped: bool = False) -> float:
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
                if reaped:  # children that exited and were waited for (a parse process)
                    total += t.children_user + t.children_system
        return total

    me = psutil.Process()
    out = {"bench": spent([me])}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            out[name] = spent([proc, *proc.children(recursive=True)], reaped=True)
    out["temporal"] = spent([c for c in me.children() if "temporal" in _name(c)])
    postgres = [p for p in psutil.process_iter() if _name(p).startswith("postgres")]
    if postgres_under is not None:
        servers = [p for p in postgres if str(postgres_under) in " ".join(_cmdline(p))]
        postgres = [q for p in servers for q in (p, *_children(p))]
    # With the backends that have exited (a connection closed).
    out["postgres"] = spent(postgres, reaped=postgres_under is not None)
    return out


def _cmdline(proc: Any) -> list[str]:
    try:
        return list(proc.cmdline())
    except Exception:  # gone, or not ours to inspect
        return []


def _children(proc: Any) -> list[Any]:
    try:
        return list(proc.children(recursive=True))
    except Exception:  # gone
        return []


def _name(proc: Any) -> str:
    try:
        return str(proc.name())
    except Exception:  # gone, or not ours to inspect
        return ""


async def gather_limited(n: int, coros: Sequence[Any]) -> list[Any]:
    window = asyncio.Semaphore(n)

    async def one(c: Any) -> Any:
        async with window:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
