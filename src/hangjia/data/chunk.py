"""Split documents into retrieval-sized chunks that keep their source, section and character span."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass

from hangjia.data.documents import Document, Section


@dataclass
class Chunk:
    """A passage of one section; `text` may carry a title prefix, `start:end` is the raw span."""

    id: str
    source: str
    section: str
    start: int
    end: int
    text: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Chunk:
        return cls(**{k: d[k] for k in ("id", "source", "section", "start", "end", "text")})


Span = tuple[int, int]

_PARAGRAPH = re.compile(r"(?:[^\n]*\S[^\n]*(?:\n|$))+")  # a run of non-blank lines
_LINE = re.compile(r"[^\n]*\S[^\n]*")
_WORD = re.compile(r"\S+")


def _words(text: str, start: int, end: int) -> int:
    return len(_WORD.findall(text, start, end))


def _pack(units: list[Span], text: str, max_words: int, overlap_words: int) -> list[Span]:
    """Greedily pack consecutive units (paragraphs or lines) into spans of at most max_words.

    Consecutive packs repeat trailing units worth up to overlap_words, so a fact at a boundary
    is whole in at least one chunk. A single unit over max_words is returned alone (split later).
    """
    sizes = [_words(text, s, e) for s, e in units]
    spans: list[Span] = []
    i = 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + sizes[j] <= max_words):
            total += sizes[j]
            j += 1
        spans.append((units[i][0], units[j - 1][1]))
        if j >= len(units):
            break
        back, kept = j, 0
        while overlap_words and back - 1 > i and kept + sizes[back - 1] <= overlap_words:
            back -= 1
            kept += sizes[back]
        i = back
    return spans


def _split_words(text: str, start: int, end: int, max_words: int, overlap_words: int) -> list[Span]:
    """Windows of at most max_words, ending at a sentence end when one lies in the window's second half."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, start, end)]
    spans: list[Span] = []
    i = 0
    while i < len(words):
        j = min(i + max_words, len(words))
        if j < len(words):
            for k in range(j - 1, i + max_words // 2 - 1, -1):
                if text[words[k][1] - 1] in ".!?":
                    j = k + 1
                    break
        spans.append((words[i][0], words[j - 1][1]))
        if j >= len(words):
            break
        i = max(j - overlap_words, i + 1)
    return spans


def _section_spans(text: str, sec: Section, max_words: int, overlap_words: int) -> list[Span]:
    """Paragraphs packed to max_words; an oversized paragraph by lines (tables, lists), then by words."""
    found = _PARAGRAPH.finditer(text, sec.start, sec.end)
    paragraphs = [(m.start(), m.start() + len(m.group().rstrip())) for m in found]
    spans: list[Span] = []
    for start, end in _pack(paragraphs, text, max_words, overlap_words):
        if _words(text, start, end) <= max_words:
            spans.append((start, end))
            continue
        lines = [(m.start(), m.end()) for m in _LINE.finditer(text, start, end)]
        for ls, le in _pack(lines, text, max_words, overlap_words):
            if _words(text, ls, le) <= max_words:
                spans.append((ls, le))
            else:
                spans.extend(_split_words(text, ls, le, max_words, overlap_words))
    return spans


def _table_header(text: str, start: int) -> str:
    """The header row of the " | " table that a span starts inside of (not at its top), or ""."""
    line_end = text.find("\n", start)
    if "|" not in text[start : len(text) if line_end == -1 else line_end]:
        return ""
    header, pos = "", text.rfind("\n", 0, start) + 1  # walk up the table's rows, line by line
    while pos > 0:
        prev_start = text.rfind("\n", 0, pos - 1) + 1
        if "|" not in text[prev_start : pos - 1]:
            break
        header, pos = text[prev_start : pos - 1], prev_start
    return header


def _chunk_text(doc: Document, sec: Section, start: int, end: int) -> str:
    """The raw span, prefixed with its section title (and table header row) when it lacks them."""
    raw = doc.text[start:end]
    first_line = " ".join(raw.split("\n", 1)[0].split())
    prefix = [sec.title] if sec.title and not first_line.startswith(sec.title) else []
    header = _table_header(doc.text, start)
    if header:
        prefix.append(header)  # a table continued from an earlier chunk keeps its column names
    return "\n".join([*prefix, raw])


def chunk_id(source: str, start: int, end: int, text: str) -> str:
    return hashlib.sha256(f"{source}:{start}:{end}:{text}".encode()).hexdigest()[:16]


def chunk_documents(docs: list[Document], max_words: int = 120, overlap_words: int = 20) -> list[Chunk]:
    """Structure-aware chunking: never crosses a section; CSV rows and JSON records stay whole when small."""
    if max_words < 1 or not 0 <= overlap_words < max_words:
        raise ValueError(f"need 0 <= overlap_words < max_words, got {overlap_words} and {max_words}")
    chunks: list[Chunk] = []
    for doc in docs:
        for sec in doc.sections:
            for start, end in _section_spans(doc.text, sec, max_words, overlap_words):
                if doc.text[start:end].split() == sec.title.split():
                    continue  # a heading with nothing under it
                text = _chunk_text(doc, sec, start, end)
                cid = chunk_id(doc.source, start, end, text)
                chunks.append(Chunk(cid, doc.source, sec.title, start, end, text))
    return chunks
