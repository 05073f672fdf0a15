"""LLM-free question-answer pairs from documents: FAQs, tables, records, definitions, numbers, headings.

A generator is a plain function `(doc, chunks_of_doc) -> [(chunk, kind, question, answer)]`, registered in
GENERATORS. Answers are copied from the text, kept short, and must pass `is_grounded` against their chunk.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath

from hangjia.data.chunk import Chunk
from hangjia.data.documents import Document


@dataclass
class QAPair:
    """One extracted question with a short answer and the chunk it came from."""

    question: str
    answer: str
    kind: str
    chunk_id: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QAPair:
        return cls(**{k: d[k] for k in ("question", "answer", "kind", "chunk_id", "source")})


Candidate = tuple[Chunk, str, str, str]  # (chunk, kind, question, answer)
Line = tuple[int, int, str]  # (start, end, text) in Document.text
Row = tuple[int, str, str]  # (row index in a table, question, answer)

MAX_ANSWER_WORDS = 40
RECORD_FORMATS = {"csv", "json", "jsonl"}
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "may",
        "might",
        "must",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "shall",
        "should",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yes",
    }
)

# ---------------------------------------------------------------- text helpers

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_ABBREVIATION = re.compile(r"\b(?:max|min|approx|ca|e\.g|i\.e|etc|nr|rev|doc|fig|incl|excl|vs)\.$", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(?:\[[ x]\]\s+)?")
_SEPARATOR = re.compile(r"^[\s|:+]*[-=]{3,}[\s|:+=-]*$")  # "-----  -----" and "|---|---|"
_COLUMNS = re.compile(r"\S(?: ?\S)*")  # cells separated by 2+ spaces
_LINE = re.compile(r"[^\n]*\S[^\n]*")


def _numbers(text: str) -> set[str]:
    return {re.sub(r",(?=\d{3}\b)", "", n) for n in _NUMBER.findall(text)}


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def is_grounded(answer: str, passage: str) -> bool:
    """Every number and >= 70% of the content words of the answer occur in the passage (case-insensitive)."""
    if not answer.strip() or not _numbers(answer) <= _numbers(passage):
        return False
    seen = set(_tokens(passage))
    content = [w for w in _tokens(answer) if len(w) > 2 and w not in STOPWORDS and not w.isdigit()]
    if not content:  # "H4", "D", "12 h": numbers are checked above, the rest must appear as tokens
        return all(t in seen for t in _tokens(answer))
    return sum(w in seen for w in content) >= 0.7 * len(content)


def _words(text: str) -> int:
    return len(text.split())


def _sentences(text: str) -> list[str]:
    out: list[str] = []
    for part in _SENTENCE_END.split(" ".join(text.split())):
        if out and _ABBREVIATION.search(out[-1]):
            out[-1] += f" {part}"  # "max. 50 m" does not end a sentence
        else:
            out.append(part)
    return out


def _first_sentences(text: str, min_words: int = 6) -> str:
    """First sentence, plus the second when the first is very short ("Yes.", "Usually not.")."""
    sentences = _sentences(text) or [""]
    answer = sentences[0]
    if _words(answer) < min_words and len(sentences) > 1:
        answer = f"{answer} {sentences[1]}"
    return " ".join(answer.split()[:MAX_ANSWER_WORDS])


def _clean_title(title: str) -> str:
    """ "3. WATER HARDNESS AND SALT" -> "Water Hardness and Salt"; codes such as "P01" keep their case."""
    title = re.sub(r"^\d+(\.\d+)*\.?\s+", "", " ".join(title.split()))
    if title.upper() == title:
        small = {"and", "or", "of", "the", "a", "an", "in", "on", "for", "to", "with", "without"}
        words = [
            w if re.search(r"\d", w) else w.lower() if w.lower() in small else w.capitalize() for w in title.split()
        ]
        title = " ".join(words)
    return title[:1].upper() + title[1:]


def _phrase(text: str) -> str:
    """Lower-case a sentence-case phrase ("Door seal" -> "door seal"), keep names ("Kestrel Aria")."""
    words = text.split()
    if words and words[0][1:].islower() and not any(w[:1].isupper() for w in words[1:]):
        return text[:1].lower() + text[1:]
    return text


def _field(name: str) -> str:
    return _phrase(" ".join(re.split(r"[_.]+", name)).strip())


def _ask(field: str, label: str) -> str:
    """ "What is the price of X?", "What are the services of X?", "What you can do for E24?" """
    if re.match(r"(what|how|which|when|where|who)\b", field, re.IGNORECASE):
        return f"{field[:1].upper()}{field[1:]} for {label}?"
    return f"What {'are' if re.search(r'[^s]s$', field) else 'is'} the {field} of {label}?"


def _ask_in(term: str, where: str) -> str:
    """ "Pressure: what is the fill pressure?"; the section names the context the term lacks."""
    question = f"what {'are' if re.search(r'[^s]s$', term) else 'is'} the {term}?"
    return f"{where}: {question}" if where and where.lower() != term.lower() else question.capitalize()


def doc_title(doc: Document) -> str:
    if doc.format in ("csv", "jsonl") or not any(s.title for s in doc.sections):
        return PurePosixPath(doc.source).stem.replace("_", " ").replace("-", " ")
    return _clean_title(next(s.title for s in doc.sections if s.title)).replace(" | ", ", ")


def _is_heading(unit: str, section: str) -> bool:
    return bool(section) and _clean_title(unit) == _clean_title(section)


def _locator(chunks: list[Chunk]) -> Callable[[int, int], Chunk | None]:
    """find(start, end) -> the first chunk holding that span. A document's chunks are sorted by start and
    by end, so the chunks holding a span are a contiguous run: bisect instead of scanning (10k-row CSVs)."""
    starts, ends = [c.start for c in chunks], [c.end for c in chunks]

    def find(start: int, end: int) -> Chunk | None:
        first, last = bisect_left(ends, end), bisect_right(starts, start) - 1
        return chunks[first] if first <= last else None

    return find


def _cells(line: str) -> list[str]:
    """Table cells of a " | " row or of a column-aligned text row; [] for ordinary prose."""
    if "|" in line:
        return [c.strip() for c in line.strip().split("|")]
    return _COLUMNS.findall(line) if re.search(r"\S {3,}\S", line.strip()) else []


def _units(doc: Document, chunk: Chunk) -> list[str]:
    """Prose units of a chunk: wrapped lines joined; blank lines, bullets, table rows and a step in
    indentation ("P01  LOW WATER FLOW" above an indented description) start a new unit."""
    units: list[list[str]] = []
    prev = ""
    for line in doc.text[chunk.start : chunk.end].split("\n"):
        indent, prev_indent = len(line) - len(line.lstrip()), len(prev) - len(prev.lstrip())
        if not line.strip() or _cells(line) or _SEPARATOR.match(line):
            units.append([])
        elif _BULLET.match(line) or (indent > prev_indent + 1 and not _BULLET.match(prev)) or not units[-1:]:
            units.append([_BULLET.sub("", line).strip()])
        elif units[-1]:
            units[-1].append(line.strip())
        else:
            units[-1] = [line.strip()]
        prev = line
    return [" ".join(u) for u in units if u]


def _place(find: Callable, lines: list[Line], rows: Iterable[Row], kind: str) -> Iterable[Candidate]:
    for r, question, answer in rows:
        chunk = find(lines[r][0], lines[r][1])
        if chunk is not None:
            yield chunk, kind, question, answer


# ---------------------------------------------------------------- generators


def faq_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """A one-sentence question ("...?", "Q: ...?") answered by the text right after it."""
    for chunk in chunks:
        units = _units(doc, chunk)
        for i, unit in enumerate(units):
            unit = re.sub(r"^Q:\s*", "", unit)
            question, _, rest = unit.partition("? ")
            if unit.endswith("?") and not rest:
                question, rest = unit[:-1], units[i + 1] if i + 1 < len(units) else ""
            if not rest or len(_sentences(question)) > 1 or "?" in question or _words(question) > 30:
                continue
            if not rest.rstrip().endswith("?"):
                yield chunk, "faq", f"{question.strip()}?", _first_sentences(re.sub(r"^A:\s*", "", rest))


def _table_rows(rows: list[list[str]], header: list[str], cols: Iterable[int]) -> Iterable[Row]:
    transposed = not header[0]  # "| DW-3100 | DW-4500": row labels are properties, columns are items
    order = (
        ((r, c) for r in range(len(rows)) for c in cols)
        if transposed
        else ((r, c) for c in cols for r in range(len(rows)))
    )  # each item's main facts first
    for r, c in order:
        row = rows[r]
        if len(row) == len(header) and row[0] and row[c].lower() not in ("", "x", "-", "–", "n/a"):
            question = _ask(_phrase(row[0]), header[c]) if transposed else _ask(_phrase(header[c]), row[0])
            yield r, question, row[c]


_KEY_COLUMN = re.compile(r"\b(part|number|no|code|id|sku|ref|reference|model)\b", re.IGNORECASE)
_NAME_COLUMN = re.compile(r"description|name|title|meaning|product", re.IGNORECASE)


def _reverse_rows(rows: list[list[str]], header: list[str]) -> Iterable[Row]:
    """ "Which part number is the drain pump assembly?" -> "KP-2210", when the first column is a code."""
    names = [c for c in range(1, len(header)) if _NAME_COLUMN.search(header[c])]
    if not header[0] or not _KEY_COLUMN.search(_field(header[0])) or not names:
        return
    key, name = _field(header[0]), names[0]
    rows = [row if len(row) == len(header) else [""] * len(header) for row in rows]
    counts = Counter(row[name] for row in rows)
    pair_counts = Counter((c, row[name], row[c]) for row in rows for c in range(1, len(header)))
    for r, row in enumerate(rows):
        if not row[0] or not row[name]:
            continue
        meaning = "meaning" in header[name].lower()
        target = f'means "{row[name]}"' if meaning else f"is the {_phrase(row[name])}"
        if counts[row[name]] > 1:  # "Door seal" fits three models: say which one
            unique = [
                c for c in range(1, len(header)) if c != name and row[c] and pair_counts[c, row[name], row[c]] == 1
            ]
            if not unique:
                continue
            target += f" with {_field(header[unique[0]])} {row[unique[0]]}"
        yield r, f"Which {key} {target}?", row[0]


def _table_runs(doc: Document, start: int, end: int) -> list[list[Line]]:
    """Runs of adjacent table rows of one kind (" | " or column-aligned); separator rows are dropped."""
    runs: list[list[Line]] = []
    prev_end, prev_kind = -2, ""
    for line in ((m.start(), m.end(), m.group()) for m in _LINE.finditer(doc.text, start, end)):
        kind = ("pipe" if "|" in line[2] else "columns") if _cells(line[2]) else ""
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


def table_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """Markdown/HTML " | " tables and column-aligned text tables; two-column lists are label/value pairs."""
    if doc.format in RECORD_FORMATS:
        return
    find = _locator(chunks)
    for sec in doc.sections:
        where = _clean_title(sec.title)
        for run in _table_runs(doc, sec.start, sec.end):
            table = [_cells(text) for _, _, text in run]
            if all(len(t) == 2 for t in table) and ("|" not in run[0][2] or table[0][1].lower() == "value"):
                skip = 1 if "|" in run[0][2] else 0  # a " | " table's first row is its header
                pairs = ((r, _ask_in(_phrase(t[0]), where), t[1]) for r, t in enumerate(table[skip:]) if t[0])
                yield from _place(find, run[skip:], pairs, "table")
                continue
            header, rows = table[0], table[1:]
            if len(header) == len(rows[0]) - 1:
                header = ["", *header]  # an indented header over the value columns only
            yield from _place(find, run[1:], _table_rows(rows, header, [1]), "table")
            yield from _place(find, run[1:], _reverse_rows(rows, header), "table")
            yield from _place(find, run[1:], _table_rows(rows, header, range(2, len(header))), "table")


_RECORD_SPLIT = re.compile(r"; (?=[^;:]{1,40}: )")  # "a: 1; b: x; y; c: 2" -> fields a, b, c
_UNIT_SUFFIX = {"eur": "EUR", "usd": "USD", "gbp": "GBP", "kg": "kg", "mm": "mm", "cm": "cm", "kw": "kW"}


def _record_fields(text: str) -> list[tuple[str, str]]:
    parts = [p for line in text.split("\n") for p in _RECORD_SPLIT.split(line)]
    return [(k.strip(), v.strip()) for k, sep, v in (p.partition(": ") for p in parts) if sep and v.strip()]


def record_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """CSV rows and JSON records: "What is the <field> of <label>?", plus reverse look-ups by code for CSV."""
    if doc.format not in RECORD_FORMATS:
        return
    find = _locator(chunks)
    records = [(sec, _record_fields(doc.text[sec.start : sec.end])) for sec in doc.sections]
    starts = [(sec.start, sec.start + 1, "") for sec, _ in records]
    for sec, fields in records:
        chunk = find(sec.start, sec.start + 1)
        if chunk is None or not sec.title or re.fullmatch(r"(record|row) \d+", sec.title):
            continue  # without a real label the question would be ambiguous
        for key, value in fields:
            if value == sec.title or _words(value) > MAX_ANSWER_WORDS:
                continue
            *words, last = re.split(r"[_.\s]+", key)
            if last.lower() in _UNIT_SUFFIX and words:  # "price_eur: 38.50" -> "price (EUR)", "38.50 EUR"
                unit = _UNIT_SUFFIX[last.lower()]
                key, value = f"{' '.join(words)} ({unit})", f"{value} {unit}"
            yield chunk, "record", _ask(_field(key), sec.title), value
    if doc.format == "csv":
        keys = list(dict.fromkeys(k for _, fields in records for k, _ in fields))
        rows = [[dict(fields).get(k, "") for k in keys] for _, fields in records]
        yield from _place(find, starts, _reverse_rows(rows, keys), "record")


_CODE = r"[A-Z]{1,4}-?\d{1,5}[A-Z]?"  # E24, P01, KP-2210, HP-08M
_CODE_DEF = re.compile(rf"^(?P<term>{_CODE})\s*(?:[–—:]|-(?=\s)|\s{{2,}})\s*(?P<def>[A-Z].{{2,}})$")
_TERM_DEF = re.compile(r"^(?P<term>[A-Z][^:\d]{0,50}?):\s+(?P<def>\S.*)$")
_MEANS = re.compile(r"^(?P<term>[A-Z0-9][\w+/-]*(?: [\w+/-]+){0,3}?) means (?:that )?(?P<def>[^.;]+)")
_IS_A = re.compile(r"^(?P<term>[A-Z][\w+/-]*(?: [\w+/-]+){0,2}?) is (?P<def>(?:a|an|the) [^.;]+)")
_NOT_TERMS = {
    "note",
    "caution",
    "warning",
    "example",
    "important",
    "tip",
    "disclaimer",
    "legal notice",
    "user",
    "installer",
    "this",
    "it",
    "that",
    "there",
    "the",
    "a",
    "an",
    "which",
    "what",
    "they",
    "we",
    "you",
}
_VERB = re.compile(r"\b(is|are|was|were|has|have|can|must|will|should|may|do|does)\b", re.IGNORECASE)


def _short(definition: str) -> str:
    definition = definition.strip().rstrip(".")
    if _words(definition) > 15:
        definition = re.split(r"[,;(]", definition)[0].strip()
    return definition.capitalize() if definition.isupper() else definition


def definition_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """ "E24 – Drain pump blocked", "Term: definition", "X means Y", "X is a Y"."""
    if doc.format in RECORD_FORMATS:
        return
    for chunk in chunks:
        where = _clean_title(chunk.section)
        for unit in _units(doc, chunk):
            if m := _CODE_DEF.match(unit):
                answer = _short(_first_sentences(m["def"], min_words=0))
                yield chunk, "definition", f"What does {m['term']} mean?", answer
                continue
            if _is_heading(unit, chunk.section):
                continue  # a heading line is not a definition
            term = m["term"] if (m := _TERM_DEF.match(unit)) else ""
            if term and term.lower() not in _NOT_TERMS and _words(term) <= 6 and not _VERB.search(term):
                answer = _first_sentences(m["def"], min_words=4)
                yield chunk, "definition", _ask_in(_phrase(term), where), answer
            for sentence in _sentences(unit):
                for pattern, template in ((_MEANS, "What does {} mean?"), (_IS_A, "What is {}?")):
                    m = pattern.match(sentence)
                    if m and m["term"].split()[0].lower() not in _NOT_TERMS:
                        yield chunk, "definition", template.format(m["term"]), _short(m["def"])


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNITS = (
    r"L/min|l/min|dB\(A\)|dB|°C|° C|kWh|kW|MPa|kPa|mm2|mm|cm|km|kg|bar|EUR|€|%|working days"
    r"|months?|years?|weeks?|days?|hours?|minutes?|seconds?|litres?|liters?|ml|mA|Hz|V|W|A|h|l|m|C|g"
)
_MEASURE = re.compile(rf"(?<![\w.,/:-])(?:€\s?)?(?:{_NUM})(?:\s?[–-]\s?(?:{_NUM}))?\s?(?:{_UNITS})(?![\w/])")


def numeric_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """A sentence with a number and unit becomes a fill-in-the-blank question whose answer is that value."""
    if doc.format == "csv":
        return  # rows are not sentences; record_pairs covers them
    title = doc_title(doc)
    for chunk in chunks:
        section = _clean_title(chunk.section)
        where = f'{title}, section "{section}"' if section and section != title else title
        for unit in _units(doc, chunk):
            for sentence in _sentences(unit):
                if not 4 <= _words(sentence) <= MAX_ANSWER_WORDS:
                    continue
                for m in list(_MEASURE.finditer(sentence))[:2]:
                    blanked = f"{sentence[: m.start()]}___{sentence[m.end() :]}"
                    question = f'According to {where}, what is the missing value in: "{blanked}"?'
                    yield chunk, "numeric", question, m.group()


def heading_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """ "What does the section '<heading>' of <doc> cover?" -> the section's first sentence."""
    if doc.format in RECORD_FORMATS:
        return
    title = doc_title(doc)
    for sec in doc.sections:
        chunk = next((c for c in chunks if c.section == sec.title and sec.start <= c.start < sec.end), None)
        heading = _clean_title(sec.title)
        if chunk is None or not heading or heading == title:
            continue
        units = [u for u in _units(doc, chunk) if not _is_heading(u, sec.title)]
        first = _first_sentences(units[0], min_words=0) if units else ""
        if first.endswith(".") and 5 <= _words(first) <= MAX_ANSWER_WORDS:
            yield chunk, "heading", f'What does the section "{heading}" of {title} cover?', first


GENERATORS: dict[str, Callable[[Document, list[Chunk]], Iterable[Candidate]]] = {
    "faq": faq_pairs,
    "table": table_pairs,
    "record": record_pairs,
    "definition": definition_pairs,
    "numeric": numeric_pairs,
    "heading": heading_pairs,
}


# ---------------------------------------------------------------- driver


def _norm(text: str) -> str:
    return " ".join(_tokens(text))


def extract_pairs(docs: list[Document], chunks: list[Chunk], max_per_chunk: int = 12) -> list[QAPair]:
    """All grounded pairs, deduplicated, at most max_per_chunk per chunk, in document order."""
    by_source: dict[str, list[Chunk]] = defaultdict(list)
    for chunk in sorted(chunks, key=lambda c: (c.source, c.start, c.end)):
        by_source[chunk.source].append(chunk)
    candidates: list[QAPair] = []
    for doc in docs:
        for generate in GENERATORS.values():
            for chunk, kind, question, answer in generate(doc, by_source[doc.source]):
                question, answer = " ".join(question.split()), " ".join(answer.split()).strip(" ,;:")
                if answer and _words(answer) <= MAX_ANSWER_WORDS and is_grounded(answer, chunk.text):
                    candidates.append(QAPair(question, answer, kind, chunk.id, chunk.source))
    # A question whose answers disagree on a number (e.g. 1,000 mm in a superseded revision, 900 mm in the
    # current one) cannot be trusted: drop it. Answers that only differ in wording keep the first.
    answers: dict[str, set[frozenset[str]]] = defaultdict(set)
    for pair in candidates:
        answers[_norm(pair.question)].add(frozenset(_numbers(pair.answer)))
    seen: set[str] = set()
    per_chunk: dict[str, list[QAPair]] = defaultdict(list)
    for pair in candidates:
        key = _norm(pair.question)
        if key not in seen and len(answers[key]) == 1:
            seen.add(key)
            per_chunk[pair.chunk_id].append(pair)
    # Cap per chunk, taking kinds in turn so one dense table cannot crowd out the chunk's other facts.
    kept: set[int] = set()
    for pairs in per_chunk.values():
        queues: dict[str, list[QAPair]] = defaultdict(list)
        for pair in pairs:
            queues[pair.kind].append(pair)
        picked: list[QAPair] = []
        while len(picked) < min(max_per_chunk, len(pairs)):
            picked.extend(q.pop(0) for q in queues.values() if q)
        kept.update(id(p) for p in picked[:max_per_chunk])
    return [p for p in candidates if id(p) in kept]
