"""Split documents into retrieval-sized chunks that keep their source, section and character span.

Sizes are tokens of the base model's tokenizer when a counter is given, else units: each CJK character (Chinese,
kana, Hangul, CJK punctuation) is one unit and each run of other non-space characters (an English word) is one.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import accumulate

from hangjia.corpus.documents import Document, Section
from hangjia.corpus.text import page_number


@dataclass
class Chunk:
    """A passage of one section; `text` may carry a title prefix, `start:end` is the raw span."""

    id: str
    source: str
    section: str
    start: int
    end: int
    text: str

    @property
    def page(self) -> int | None:
        """The PDF page the chunk comes from (a PDF's sections are its pages); None for other formats."""
        return page_number(self.source, self.section)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Chunk:
        return cls(**{k: d[k] for k in ("id", "source", "section", "start", "end", "text")})


Span = tuple[int, int]
Measure = Callable[[str], int]

# Each character of these blocks is a unit of its own: CJK punctuation (from U+3001; U+3000 is a space), kana,
# CJK extension A, CJK ideographs, Hangul syllables, compatibility ideographs, full-width forms (！？；，Ａ１),
# extensions B+. Chinese and Japanese write no spaces, so a paragraph would otherwise be one unsplittable "word".
_CJK = "\u3001-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f"
_UNIT = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")  # a CJK character, or a run of other non-space characters
_SENTENCE_END = ".!?。！？；…｡"
_CLOSERS = "\"')]}’”»」』）】》〉"  # may follow a sentence end: 他说：“好。” ends after the closing quote
_PARAGRAPH = re.compile(r"(?:[^\n]*\S[^\n]*(?:\n|$))+")  # a run of non-blank lines
_LINE = re.compile(r"[^\n]*\S[^\n]*")
_CACHED_CHARS = 64  # units and short lines repeat (words, characters, table cells): count each distinct one once


def count_units(text: str) -> int:
    """The size used without a tokenizer: CJK characters plus runs of other non-space characters (words)."""
    return len(_UNIT.findall(text))


def _measurer(count_tokens: Measure | None) -> Measure:
    if count_tokens is None:
        return count_units
    cache: dict[str, int] = {}

    def measure(text: str) -> int:
        if len(text) > _CACHED_CHARS:
            return count_tokens(text)
        if text not in cache:
            cache[text] = count_tokens(text)
        return cache[text]

    return measure


def _ends_sentence(text: str, lo: int, pos: int) -> bool:
    """Whether text[lo:pos] ends with a sentence end, perhaps followed by closing quotes or brackets."""
    while pos > lo and text[pos - 1] in _CLOSERS:
        pos -= 1
    return pos > lo and text[pos - 1] in _SENTENCE_END


def _pack(
    units: list[Span], text: str, max_size: int, overlap: int, measure: Measure, sentences: bool = False
) -> list[tuple[int, int, bool]]:
    """Greedily pack consecutive units (paragraphs, lines or words) into spans that measure at most max_size.

    Each unit is measured once and sizes are summed as an estimate; a span of several units is then measured once
    more, and if separators or merges across units pushed it over, the budget shrinks by the excess and the span is
    packed again (usually one or two counts per span: each character is counted a few times, never per window).
    Consecutive spans repeat trailing units worth up to `overlap`, so a fact at a boundary is whole in at least one
    chunk. A single unit over max_size comes back alone with fits=False. With sentences=True a span ends just after
    a sentence end when one lies in its second half.
    """
    sizes = [measure(text[s:e]) for s, e in units]
    prefix = [0, *accumulate(sizes)]  # size of units[i:j] is estimated as prefix[j] - prefix[i]
    spans: list[tuple[int, int, bool]] = []
    i = 0
    while i < len(units):
        budget = max_size
        while True:
            j = max(bisect_right(prefix, prefix[i] + budget, lo=i + 1) - 1, i + 1)
            if sentences and j < len(units):
                j = _after_sentence_end(units, text, prefix, i, j, budget)
            if j == i + 1:
                fits = sizes[i] <= max_size
                break
            excess = measure(text[units[i][0] : units[j - 1][1]]) - max_size
            if excess <= 0:
                fits = True
                break
            budget = prefix[j] - prefix[i] - excess  # below this span's estimate, so the next try is shorter
        spans.append((units[i][0], units[j - 1][1], fits))
        if j >= len(units):
            break
        back = j
        while overlap > 0 and back - 1 > i and prefix[j] - prefix[back - 1] <= overlap:
            back -= 1
        i = back
    return spans


def _after_sentence_end(units: list[Span], text: str, prefix: list[int], i: int, j: int, budget: int) -> int:
    """The last k <= j such that units[i:k] ends a sentence and fills over half the budget, else j."""
    for k in range(j, i, -1):
        if prefix[k] - prefix[i] <= budget // 2:
            break
        if _ends_sentence(text, units[i][0], units[k - 1][1]):
            return k
    return j


def _section_spans(text: str, sec: Section, max_size: int, overlap: int, measure: Measure) -> list[Span]:
    """Paragraphs packed to max_size; an oversized paragraph by lines (tables, lists), then by units."""
    found = _PARAGRAPH.finditer(text, sec.start, sec.end)
    paragraphs = [(m.start(), m.start() + len(m.group().rstrip())) for m in found]
    spans: list[Span] = []
    for start, end, fits in _pack(paragraphs, text, max_size, overlap, measure):
        if fits:
            spans.append((start, end))
            continue
        lines = [(m.start(), m.end()) for m in _LINE.finditer(text, start, end)]
        packed = _pack(lines, text, max_size, overlap, measure) if len(lines) > 1 else [(*lines[0], False)]
        for ls, le, line_fits in packed:  # a one-line paragraph is known not to fit: no need to count it again
            if line_fits:
                spans.append((ls, le))
                continue
            units = [(m.start(), m.end()) for m in _UNIT.finditer(text, ls, le)]
            spans.extend((s, e) for s, e, _ in _pack(units, text, max_size, overlap, measure, sentences=True))
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


def chunk_documents(
    docs: list[Document],
    max_tokens: int = 160,
    overlap_tokens: int = 24,
    count_tokens: Measure | None = None,
    *,
    max_words: int | None = None,
    overlap_words: int | None = None,
) -> list[Chunk]:
    """Structure-aware chunking: never crosses a section; CSV rows and JSON records stay whole when they fit.

    Sizes are counted by `count_tokens` (the base model's tokenizer) or, without it, in units (`count_units`).
    Every chunk's raw span measures at most max_tokens, except a single unit longer than that on its own (a very
    long URL or identifier), which is kept whole; the title prefix in `Chunk.text` comes on top of the bound.
    """
    # Deprecated aliases from when sizes were counted in words; remove once no caller passes them.
    max_tokens = max_tokens if max_words is None else max_words
    overlap_tokens = overlap_tokens if overlap_words is None else overlap_words
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"need 0 <= overlap_tokens < max_tokens, got {overlap_tokens} and {max_tokens}")
    measure = _measurer(count_tokens)
    chunks: list[Chunk] = []
    for doc in docs:
        for sec in doc.sections:
            for start, end in _section_spans(doc.text, sec, max_tokens, overlap_tokens, measure):
                if doc.text[start:end].split() == sec.title.split():
                    continue  # a heading with nothing under it
                text = _chunk_text(doc, sec, start, end)
                cid = chunk_id(doc.source, start, end, text)
                chunks.append(Chunk(cid, doc.source, sec.title, start, end, text))
    return chunks
