"""How a chunk's text divides for extraction: sentences, prose units, table cells and rows, the chunk holding a span."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable

from hangjia.core.grounding import MAX_ANSWER_WORDS, word_count
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.documents import Document

Line = tuple[int, int, str]  # (start, end, text) in Document.text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|(?<=[。！？；])\s*(?=\S)")  # Chinese: no space after
_ABBREVIATION = re.compile(r"\b(?:max|min|approx|ca|e\.g|i\.e|etc|nr|rev|doc|fig|incl|excl|vs)\.$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(?:\[[ x]\]\s+)?")
_SEPARATOR = re.compile(r"^[\s|:+]*[-=]{3,}[\s|:+=-]*$")  # "-----  -----" and "|---|---|"
_COLUMNS = re.compile(r"\S(?: ?\S)*")  # cells separated by 2+ spaces
_LINE = re.compile(r"[^\n]*\S[^\n]*")


def split_sentences(text: str) -> list[str]:
    out: list[str] = []
    for part in _SENTENCE_END.split(" ".join(text.split())):
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] += f" {part}"  # "max. 50 m" does not end a sentence
        else:
            out.append(part)
    return out


def first_sentences(text: str, min_words: int = 6) -> str:
    """First sentence, plus the second when the first is very short ("Yes.", "Usually not.")."""
    sentences = split_sentences(text) or [""]
    answer = sentences[0]
    if word_count(answer) < min_words and len(sentences) > 1:
        answer = f"{answer} {sentences[1]}"
    return " ".join(answer.split()[:MAX_ANSWER_WORDS])


def locator(chunks: list[Chunk]) -> Callable[[int, int], Chunk | None]:
    """find(start, end) -> the first chunk holding that span. A document's chunks are sorted by start and
    by end, so the chunks holding a span are a contiguous run: bisect instead of scanning (10k-row CSVs)."""
    starts, ends = [c.start for c in chunks], [c.end for c in chunks]

    def find(start: int, end: int) -> Chunk | None:
        first, last = bisect_left(ends, end), bisect_right(starts, start) - 1
        return chunks[first] if first <= last else None

    return find


def cells(line: str) -> list[str]:
    """Table cells of a " | " row or of a column-aligned text row; [] for ordinary prose."""
    if "|" in line:
        return [c.strip() for c in line.strip().split("|")]
    return _COLUMNS.findall(line) if re.search(r"\S {3,}\S", line.strip()) else []


def prose_units(doc: Document, chunk: Chunk) -> list[str]:
    """Prose units of a chunk: wrapped lines joined; blank lines, bullets, table rows and a step in
    indentation ("P01  LOW WATER FLOW" above an indented description) start a new unit."""
    units: list[list[str]] = []
    prev = ""
    for line in doc.text[chunk.start : chunk.end].split("\n"):
        indent, prev_indent = len(line) - len(line.lstrip()), len(prev) - len(prev.lstrip())
        if not line.strip() or cells(line) or _SEPARATOR.match(line):
            units.append([])
        elif _BULLET.match(line) or (indent > prev_indent + 1 and not _BULLET.match(prev)) or not units[-1:]:
            units.append([_BULLET.sub("", line).strip()])
        elif units[-1]:
            units[-1].append(line.strip())
        else:
            units[-1] = [line.strip()]
        prev = line
    return [" ".join(u) for u in units if u]


def table_runs(doc: Document, start: int, end: int) -> list[list[Line]]:
    """Runs of adjacent table rows of one kind (" | " or column-aligned); separator rows are dropped."""
    runs: list[list[Line]] = []
    prev_end, prev_kind = -2, ""
    for line in ((m.start(), m.end(), m.group()) for m in _LINE.finditer(doc.text, start, end)):
        kind = ("pipe" if "|" in line[2] else "columns") if cells(line[2]) else ""
        adjacent = prev_end + 1 == line[0] and kind == prev_kind
        prev_end = line[1]
        if _SEPARATOR.match(line[2]):
            continue  # keeps prev_kind, so the rows below a separator join the header above it
        if kind and adjacent:
            runs[-1].append(line)
        elif kind:
            runs.append([line])
        prev_kind = kind
    return [run for run in runs if len(run) >= 2]
