"""PDF loader (pypdf): one section per page, titled "page N", with running headers and footers dropped."""

from __future__ import annotations

import io
import re
from collections import Counter

from pypdf import PdfReader
from pypdf.errors import DependencyError

from hangjia.corpus.text import Section, assemble, normalise, one_line, page_title

_EDGE_LINES = 2  # running headers/footers are at most this many lines at the top or bottom of a page
_DIGITS = re.compile(r"\d+")


def _edge_key(line: str) -> str:
    """Lines equal up to their numbers: "Page 2 of 9" and "Page 3 of 9" are the same footer."""
    return _DIGITS.sub("#", one_line(line)).lower()


def _drop_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Drop the first/last lines that repeat (numbers aside) on at least half the pages with text, 3 or more."""
    with_text = sum(1 for lines in pages if lines)
    if with_text < 3:
        return pages
    counts = Counter(
        key for lines in pages for key in {_edge_key(ln) for ln in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]}
    )
    running = {key for key, n in counts.items() if n >= 2 and n * 2 >= with_text}
    cleaned = []
    for lines in pages:
        start, end = 0, len(lines)
        while start < min(_EDGE_LINES, end) and _edge_key(lines[start]) in running:
            start += 1
        while end > max(start, len(lines) - _EDGE_LINES) and _edge_key(lines[end - 1]) in running:
            end -= 1
        cleaned.append(lines[start:end])
    return cleaned


def _open(raw: bytes) -> PdfReader:
    try:
        reader = PdfReader(io.BytesIO(raw))
    except Exception as e:  # pypdf raises many error types (PdfReadError, KeyError, ...) on damaged files
        raise ValueError(f"corrupt PDF: {e or type(e).__name__}") from None
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("")  # an owner password alone restricts editing, not reading
        except DependencyError:
            raise ValueError("encrypted PDF (reading it needs the 'cryptography' package)") from None
        if not opened:
            raise ValueError("encrypted PDF (password protected)")
    return reader


def load_pdf(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    reader = _open(raw)
    pages: list[list[str]] = []
    try:
        for page in reader.pages:
            text = normalise(page.extract_text() or "")
            pages.append([ln for ln in text.split("\n") if ln.strip()])
    except Exception as e:
        raise ValueError(f"corrupt PDF: page {len(pages) + 1} could not be read ({e or type(e).__name__})") from None
    if not any(pages):
        raise ValueError("no extractable text (scanned PDF? OCR is not supported)")
    pages = _drop_running_lines(pages)
    return assemble([(page_title(n), "\n".join(lines)) for n, lines in enumerate(pages, 1)])
