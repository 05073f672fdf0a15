"""The LLM-free generators: FAQs, tables, records, definitions, numbers and headings, registered in GENERATORS.

A generator is a plain function `(doc, chunks_of_doc) -> [(chunk, kind, question, answer)]`; answers are copied
from the text and kept short.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable

from hangjia.core.grounding import MAX_ANSWER_WORDS, word_count
from hangjia.core.words import is_chinese
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.documents import Document
from hangjia.instruct.passages import Line, cells, first_sentences, locator, prose_units, split_sentences, table_runs
from hangjia.instruct.wording import ask, ask_in, clean_title, doc_title, field_phrase, is_heading, phrase

Candidate = tuple[Chunk, str, str, str]  # (chunk, kind, question, answer)
Row = tuple[int, str, str]  # (row index in a table, question, answer)

RECORD_FORMATS = {"csv", "json", "jsonl", "xlsx", "parquet"}


def _place(find: Callable, lines: list[Line], rows: Iterable[Row], kind: str) -> Iterable[Candidate]:
    for r, question, answer in rows:
        chunk = find(lines[r][0], lines[r][1])
        if chunk is not None:
            yield chunk, kind, question, answer


def faq_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """A one-sentence question ("...?", "Q: ...?") answered by the text right after it."""
    for chunk in chunks:
        units = prose_units(doc, chunk)
        for i, unit in enumerate(units):
            unit = re.sub(r"^Q:\s*", "", unit)
            question, _, rest = unit.partition("? ")
            if unit.endswith("?") and not rest:
                question, rest = unit[:-1], units[i + 1] if i + 1 < len(units) else ""
            if not rest or len(split_sentences(question)) > 1 or "?" in question or word_count(question) > 30:
                continue
            if not rest.rstrip().endswith("?"):
                yield chunk, "faq", f"{question.strip()}?", first_sentences(re.sub(r"^A:\s*", "", rest))


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
            question = ask(phrase(row[0]), header[c]) if transposed else ask(phrase(header[c]), row[0])
            yield r, question, row[c]


_KEY_COLUMN = re.compile(r"\b(part|number|no|code|id|sku|ref|reference|model)\b", re.IGNORECASE)
_NAME_COLUMN = re.compile(r"description|name|title|meaning|product", re.IGNORECASE)


def _reverse_rows(rows: list[list[str]], header: list[str]) -> Iterable[Row]:
    """ "Which part number is the drain pump assembly?" -> "KP-2210", when the first column is a code."""
    names = [c for c in range(1, len(header)) if _NAME_COLUMN.search(header[c])]
    if not header[0] or not _KEY_COLUMN.search(field_phrase(header[0])) or not names:
        return
    key, name = field_phrase(header[0]), names[0]
    rows = [row if len(row) == len(header) else [""] * len(header) for row in rows]
    counts = Counter(row[name] for row in rows)
    pair_counts = Counter((c, row[name], row[c]) for row in rows for c in range(1, len(header)))
    for r, row in enumerate(rows):
        if not row[0] or not row[name]:
            continue
        meaning = "meaning" in header[name].lower()
        target = f'means "{row[name]}"' if meaning else f"is the {phrase(row[name])}"
        if counts[row[name]] > 1:  # "Door seal" fits three models: say which one
            unique = [
                c for c in range(1, len(header)) if c != name and row[c] and pair_counts[c, row[name], row[c]] == 1
            ]
            if not unique:
                continue
            target += f" with {field_phrase(header[unique[0]])} {row[unique[0]]}"
        yield r, f"Which {key} {target}?", row[0]


def table_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """Markdown/HTML " | " tables and column-aligned text tables; two-column lists are label/value pairs."""
    if doc.format in RECORD_FORMATS:
        return
    find = locator(chunks)
    for sec in doc.sections:
        where = clean_title(sec.title)
        for run in table_runs(doc, sec.start, sec.end):
            table = [cells(text) for _, _, text in run]
            if all(len(t) == 2 for t in table) and ("|" not in run[0][2] or table[0][1].lower() == "value"):
                skip = 1 if "|" in run[0][2] else 0  # a " | " table's first row is its header
                pairs = ((r, ask_in(phrase(t[0]), where), t[1]) for r, t in enumerate(table[skip:]) if t[0])
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
    find = locator(chunks)
    records = [(sec, _record_fields(doc.text[sec.start : sec.end])) for sec in doc.sections]
    starts = [(sec.start, sec.start + 1, "") for sec, _ in records]
    for sec, fields in records:
        chunk = find(sec.start, sec.start + 1)
        if chunk is None or not sec.title or re.fullmatch(r"(record|row) \d+", sec.title):
            continue  # without a real label the question would be ambiguous
        for key, value in fields:
            if value == sec.title or word_count(value) > MAX_ANSWER_WORDS:
                continue
            *words, last = re.split(r"[_.\s]+", key)
            if last.lower() in _UNIT_SUFFIX and words:  # "price_eur: 38.50" -> "price (EUR)", "38.50 EUR"
                unit = _UNIT_SUFFIX[last.lower()]
                key, value = f"{' '.join(words)} ({unit})", f"{value} {unit}"
            yield chunk, "record", ask(field_phrase(key), sec.title), value
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
    if word_count(definition) > 15:
        definition = re.split(r"[,;(]", definition)[0].strip()
    return definition.capitalize() if definition.isupper() else definition


# "E1表示点火失败", "LS-60A是一款储水式电热水器": a Chinese "X means Y" / "X is Y" (the term without Han characters
# or short, so a whole clause is not taken for a term).
_ZH_MEANS = re.compile(
    r"^(?P<term>[A-Za-z0-9][\w-]{0,15}|[^\s，。；：]{2,8})(?:表示|代表|是指|指的是|意为)(?P<def>[^，。；]{2,40})"
)
_DEFINITION_TEMPLATES = ((_MEANS, "What does {} mean?"), (_IS_A, "What is {}?"), (_ZH_MEANS, "{}是什么意思？"))


def _what_does_it_mean(term: str, answer: str) -> str:
    return f"{term}是什么意思？" if is_chinese(answer) else f"What does {term} mean?"


def definition_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """ "E24 – Drain pump blocked", "Term: definition", "X means Y", "X is a Y"."""
    if doc.format in RECORD_FORMATS:
        return
    for chunk in chunks:
        where = clean_title(chunk.section)
        for unit in prose_units(doc, chunk):
            if m := _CODE_DEF.match(unit):
                answer = _short(first_sentences(m["def"], min_words=0))
                yield chunk, "definition", _what_does_it_mean(m["term"], answer), answer
                continue
            if is_heading(unit, chunk.section):
                continue  # a heading line is not a definition
            term = m["term"] if (m := _TERM_DEF.match(unit)) else ""
            if term and term.lower() not in _NOT_TERMS and word_count(term) <= 6 and not _VERB.search(term):
                answer = first_sentences(m["def"], min_words=4)
                yield chunk, "definition", ask_in(phrase(term), where), answer
            for sentence in split_sentences(unit):
                for pattern, template in _DEFINITION_TEMPLATES:
                    m = pattern.match(sentence)
                    if m and m["term"].split()[0].lower() not in _NOT_TERMS:
                        yield chunk, "definition", template.format(m["term"]), _short(m["def"])


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNITS = (
    r"L/min|l/min|dB\(A\)|dB|°C|° C|kWh|kW|MPa|kPa|mm2|mm|cm|km|kg|bar|EUR|€|%|working days"
    r"|months?|years?|weeks?|days?|hours?|minutes?|seconds?|litres?|liters?|ml|mA|Hz|V|W|A|h|l|m|C|g"
)
_MEASURE = re.compile(rf"(?<![\w.,/:-])(?:€\s?)?(?:{_NUM})(?:\s?[–-]\s?(?:{_NUM}))?\s?(?:{_UNITS})(?![\w/])")


# Chinese units; the value may follow a Han character ("功率为2千瓦"), which \w would count as part of a word.
_UNITS_ZH = (
    r"毫米|厘米|千米|米|千瓦时|千瓦|瓦|升/分钟|毫升|升|摄氏度|℃|兆帕|千帕|千克|公斤|克|元|个月|年|周|天|小时|分钟|秒"
    r"|伏|安|赫兹|分贝"
)
_MEASURE_ZH = re.compile(rf"(?<![A-Za-z0-9.,/:-])(?:{_NUM})(?:\s?[–~～-]\s?(?:{_NUM}))?\s?(?:{_UNITS_ZH})")


def _measures(sentence: str) -> list[re.Match]:
    return list(_MEASURE_ZH.finditer(sentence) if is_chinese(sentence) else _MEASURE.finditer(sentence))


def numeric_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """A sentence with a number and unit becomes a fill-in-the-blank question whose answer is that value."""
    if doc.format == "csv":
        return  # rows are not sentences; record_pairs covers them
    title = doc_title(doc)
    for chunk in chunks:
        section = clean_title(chunk.section)
        where = f'{title}, section "{section}"' if section and section != title else title
        where_zh = f"《{title}》“{section}”一节" if section and section != title else f"《{title}》"
        for unit in prose_units(doc, chunk):
            for sentence in split_sentences(unit):
                if not 4 <= word_count(sentence) <= MAX_ANSWER_WORDS:
                    continue
                for m in _measures(sentence)[:2]:
                    blanked = f"{sentence[: m.start()]}___{sentence[m.end() :]}"
                    if is_chinese(sentence):
                        question = f"根据{where_zh}，“{blanked}”中空缺的数值是多少？"
                    else:
                        question = f'According to {where}, what is the missing value in: "{blanked}"?'
                    yield chunk, "numeric", question, m.group()


def heading_pairs(doc: Document, chunks: list[Chunk]) -> Iterable[Candidate]:
    """ "What does the section '<heading>' of <doc> cover?" -> the section's first sentence."""
    if doc.format in RECORD_FORMATS:
        return
    title = doc_title(doc)
    for sec in doc.sections:
        chunk = next((c for c in chunks if c.section == sec.title and sec.start <= c.start < sec.end), None)
        heading = clean_title(sec.title)
        if chunk is None or not heading or heading == title:
            continue
        units = [u for u in prose_units(doc, chunk) if not is_heading(u, sec.title)]
        first = first_sentences(units[0], min_words=0) if units else ""
        if first.endswith("。") and 5 <= word_count(first) <= MAX_ANSWER_WORDS:
            yield chunk, "heading", f"《{title}》中“{heading}”一节讲了什么？", first
        elif first.endswith(".") and 5 <= word_count(first) <= MAX_ANSWER_WORDS:
            yield chunk, "heading", f'What does the section "{heading}" of {title} cover?', first


GENERATORS: dict[str, Callable[[Document, list[Chunk]], Iterable[Candidate]]] = {
    "faq": faq_pairs,
    "table": table_pairs,
    "record": record_pairs,
    "definition": definition_pairs,
    "numeric": numeric_pairs,
    "heading": heading_pairs,
}
