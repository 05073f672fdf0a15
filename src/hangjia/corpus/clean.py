"""Clean loaded documents: repair unicode, drop running headers/footers and boilerplate, redact PII, filter junk.

A Document's sections are character spans into its text, so a cleaned document is rebuilt section by section with
`assemble`, never edited in place.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import ftfy

from hangjia.corpus.documents import Document
from hangjia.corpus.pii import Kept, redact_keeping
from hangjia.corpus.text import Block, assemble, one_line


@dataclass
class CleanReport:
    """What `clean_documents` changed, dropped and found."""

    documents_changed: int = 0
    """Documents whose text or sections differ after cleaning."""
    header_footer_lines: int = 0
    """Lines dropped because they repeat across documents or pages (running headers and footers)."""
    boilerplate_lines: int = 0
    """Lines dropped because they match BOILERPLATE (copyright, cookie notices, page numbers)."""
    languages: dict[str, str] = field(default_factory=dict)
    """Language code of each document's cleaned text, by source."""
    filtered: list[tuple[str, str]] = field(default_factory=list)
    """(source, reason) for documents left out by the quality filters."""
    pii: Counter[str] = field(default_factory=Counter)
    """Redacted items per PII kind, over all documents."""
    pii_kept: list[dict[str, Any]] = field(default_factory=list)
    """Contacts left in the text: kind, value, the rule that kept it, count and sources (see `tally_kept`)."""

    def to_dict(self) -> dict:
        return asdict(self) | {"pii": dict(self.pii), "filtered": [list(f) for f in self.filtered]}


KEPT_SOURCES = 3  # documents named per kept contact in the report; a hotline on every page would name them all


def tally_kept(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of kept contacts with one kind, value and rule made one row: counts added, the first KEPT_SOURCES
    sources by name; sorted, so batches merged in any order give the same list."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["kind"], row["value"], row["rule"])
        into = merged.setdefault(key, {"kind": key[0], "value": key[1], "rule": key[2], "count": 0, "sources": []})
        into["count"] += row["count"]
        into["sources"] = sorted(set(into["sources"]) | set(row["sources"]))[:KEPT_SOURCES]
    return [merged[key] for key in sorted(merged)]


def _kept_rows(kept: Iterable[Kept], source: str) -> list[dict[str, Any]]:
    return [{**asdict(k), "count": n, "sources": [source]} for k, n in Counter(kept).items()]


# --- text -----------------------------------------------------------------------------------------------------------

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e]")
_CJK = "\u2e80-\u2fdf\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_CHAR = re.compile(f"[{_CJK}\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff60]")
# Fullwidth punctuation（，：；！？）belongs in Chinese text, where NFKC would turn it into ASCII; "…" would become
# "..." and superscripts lose their meaning (10⁻³ -> 10-3, mm² -> mm2), so those are kept too.
_KEEP_NEAR_CJK = re.compile("[\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff60\u2026]")
_KEEP_ALWAYS = re.compile("[\u00b2\u00b3\u00b9\u2070-\u209f]")


def _beside_cjk(text: str, i: int) -> bool:
    """Whether the nearest non-space character before or after position i is CJK (looking at most 3 characters)."""
    for step in (-1, 1):
        j = i + step
        while 0 <= j < len(text) and abs(j - i) <= 3 and text[j].isspace():
            j += step
        if 0 <= j < len(text) and _CJK_CHAR.match(text[j]):
            return True
    return False


def _nfkc(text: str) -> str:
    """NFKC, except for fullwidth punctuation beside CJK text and for super/subscripts."""
    keep = [m.start() for m in _KEEP_ALWAYS.finditer(text)]
    keep += [m.start() for m in _KEEP_NEAR_CJK.finditer(text) if _beside_cjk(text, m.start())]
    parts, pos = [], 0
    for i in sorted(keep):
        parts += [unicodedata.normalize("NFKC", text[pos:i]), text[i]]
        pos = i + 1
    parts.append(unicodedata.normalize("NFKC", text[pos:]))
    return "".join(parts)


def clean_text(text: str) -> str:
    """Repair mojibake, NFKC-normalise, drop zero-width characters, normalise spaces and blank lines.

    Leading indentation and runs of spaces inside a line are kept (column tables depend on them)."""
    # Width and quotes are left to _nfkc and the author: ftfy would turn Chinese ，and “” into ASCII.
    text = ftfy.fix_text(text, fix_character_width=False, uncurl_quotes=False)
    text = _nfkc(_ZERO_WIDTH.sub("", text))
    text = re.sub(r"[\f\v]", "\n", text)  # page breaks
    # Exotic spaces become plain ones, but runs are kept: plain-text tables align columns with them, and the
    # extractive generator reads "Minimum flow   14 L/min   20 L/min" as cells. Tabs become 4 spaces.
    lines = (re.sub(r"[^\S\n\t ]", " ", line).replace("\t", "    ").rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


# --- headers, footers and boilerplate -------------------------------------------------------------------------------

BOILERPLATE: list[re.Pattern] = [
    re.compile(r"(?:©|\(c\)|\bcopyright\b)\s*(?:©|\(c\))?\s*(?:19|20)\d\d", re.IGNORECASE),  # © 2024 Kestrel Ltd.
    re.compile(r"\ball rights reserved\b|版权所有", re.IGNORECASE),
    re.compile(
        r"\b(?:we|this (?:web)?site) uses? cookies\b|\baccept (?:all )?cookies\b|\bcookie (?:policy|settings)\b"
        r"|(?:本网站|我们)使用\s*cookies?",
        re.IGNORECASE,
    ),
    re.compile(r"^\W*printed in\b", re.IGNORECASE),  # Printed in Germany 03/2024
    re.compile(r"\bpage\s+\d+\s*(?:of|/)\s*\d+\b|^\W*page\s+\d+\W*$", re.IGNORECASE),  # Page 3 of 9 | Page 3
    re.compile(r"第\s*\d+\s*页\s*[,，/]?\s*共\s*\d+\s*页|^\W*第\s*\d+\s*页\W*$"),  # 第3页 共9页
    re.compile(r"^\s*-\s*\d+\s*-\s*$"),  # - 3 -
]


def is_boilerplate(line: str) -> bool:
    return any(p.search(line) for p in BOILERPLATE)


def line_key(line: str) -> str:
    """A line as compared across pages: whitespace collapsed, case folded, digit runs masked ("Page # of #")."""
    return re.sub(r"\d+", "#", one_line(line).casefold())


# Running headers and footers sit in the first or last lines of a page; looking only there keeps "Weight: 45 kg"
# and "Weight: 52 kg" (one key once digits are masked) in the middle of many spec sheets from being taken for one.
_EDGE_LINES = 2
# Rows of a table have no running headers, and their repeated short values ("status: open") are content.
_RECORD_FORMATS = {"json", "jsonl", "csv", "xlsx", "parquet"}


def _edge_keys(page: str) -> set[str]:
    lines = [ln for ln in clean_text(page).split("\n") if any(c.isalnum() for c in ln)]
    return {line_key(ln) for ln in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]}


class RepeatedLines:
    """`repeated_lines` one document at a time: `add` each, then `result()`. Holds only line counts, not texts
    (a key per distinct edge line: up to 4 per page, far fewer once headers repeat)."""

    def __init__(self, min_share: float = 0.5, min_docs: int = 3):
        self.min_share, self.min_docs = min_share, min_docs
        self.documents = 0
        self.in_docs: Counter[str] = Counter()
        self.found: set[str] = set()

    def add(self, doc: Document) -> None:
        if doc.format in _RECORD_FORMATS:
            return
        self.documents += 1
        pages = doc.text.split("\f")
        on_pages: Counter[str] = Counter()
        for page in pages:
            on_pages.update(_edge_keys(page))
        self.in_docs.update(on_pages.keys())
        self.found |= {k for k, n in on_pages.items() if n >= self.min_docs and n >= self.min_share * len(pages)}

    def result(self) -> set[str]:
        common = {k for k, n in self.in_docs.items() if n >= self.min_docs and n >= self.min_share * self.documents}
        return self.found | common


def repeated_lines(documents: Iterable[Document], min_share: float = 0.5, min_docs: int = 3) -> set[str]:
    """Keys (see `line_key`) of lines that repeat like running headers and footers.

    Only the first and last two lines of each page count (pages are split at form feeds; a document without them
    is one page), and only in documents that are not tables (json, jsonl, csv). A line is repeated when it is there
    in at least `min_docs` documents and `min_share` of all of them, or on at least `min_docs` pages and
    `min_share` of the pages of one document.
    """
    counter = RepeatedLines(min_share, min_docs)
    for doc in documents:
        counter.add(doc)
    return counter.result()


# --- language and quality -------------------------------------------------------------------------------------------

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")  # one token per CJK character, else per word


def detect_language(text: str) -> str:
    """ISO 639-1 code of the text's language ("zh", "en", …), or "und" when it has no letters."""
    letters = sum(c.isalpha() for c in text)
    if not letters:
        return "und"
    han, kana = len(_HAN.findall(text)), len(_KANA.findall(text))
    if han >= 0.3 * letters and kana < 0.05 * letters:
        return "zh"
    import py3langid  # the model ships inside the package; imported here because loading it takes ~0.5 s

    return py3langid.classify(text[:20_000])[0]


def _duplicate_line_share(text: str) -> float:
    """Share of characters in lines that already appeared; by characters, so short record lines such as
    "sun: closed" in every service centre of a JSON file weigh little (0.18 for the sample service_centres.json)."""
    seen: set[str] = set()
    total = duplicate = 0
    for line in (ln.strip() for ln in text.split("\n")):
        total += len(line)
        duplicate += len(line) if line in seen else 0
        seen.add(line)
    return duplicate / total if total else 0.0


def _duplicate_trigram_share(text: str) -> float:
    """Share of token 3-grams that repeat within their paragraph: looping text, not the field names that every
    row of a table repeats (0.44 over the whole sample spare_parts_prices.csv, 0.00 within its rows)."""
    total = duplicate = 0
    for paragraph in text.split("\n\n"):
        tokens = [t.casefold() for t in _TOKEN.findall(paragraph)]
        trigrams = list(zip(tokens, tokens[1:], tokens[2:], strict=False))
        total += len(trigrams)
        duplicate += len(trigrams) - len(set(trigrams))
    return duplicate / total if total else 0.0


def quality_issues(text: str, min_chars: int, max_symbol_ratio: float, max_repeat_ratio: float) -> list[str]:
    """Reasons to leave a document out of training: "too short", "too many symbols", "repetitive"."""
    issues = []
    if len(text.strip()) < min_chars:
        issues.append("too short")
    visible = [c for c in text if not c.isspace()]
    if visible and sum(not c.isalnum() for c in visible) / len(visible) > max_symbol_ratio:
        issues.append("too many symbols")
    if max(_duplicate_line_share(text), _duplicate_trigram_share(text)) > max_repeat_ratio:
        issues.append("repetitive")
    return issues


# --- documents ------------------------------------------------------------------------------------------------------


@dataclass
class DocumentCounts:
    """What `clean_document` counted in one document; `clean_documents` adds these up into a CleanReport."""

    header_footer_lines: int = 0
    boilerplate_lines: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    pii_kept: list[dict[str, Any]] = field(default_factory=list)
    """Contacts left in the text, as rows of CleanReport.pii_kept."""
    language: str = "und"
    """Language code of the cleaned text."""
    changed: bool = False
    """Whether the text or sections differ after cleaning."""


@dataclass(frozen=True)
class CleanOptions:
    """How documents are cleaned and filtered; one value passed whole through the batch stages."""

    min_chars: int = 50
    """A document shorter than this after cleaning is filtered out as too short."""
    max_symbol_ratio: float = 0.3
    """A document whose share of non-alphanumeric characters is higher is filtered out."""
    max_repeat_ratio: float = 0.5
    """A document whose share of repeated lines or 3-grams is higher is filtered out as repetitive."""
    redact_pii: bool = True
    """Replace personal data with placeholders (see pii.py)."""
    placeholders: dict[str, str] | None = None
    """Placeholder overrides per PII kind."""
    pii_allow: tuple[str, ...] = ()
    """Published contacts that are never redacted."""
    keep_org_contacts: bool = True
    """Keep phone numbers and e-mails that contacts.py judges to be the organisation's, not a person's."""


DEFAULT_OPTIONS = CleanOptions()


def clean_document(
    doc: Document, repeated: Collection[str], options: CleanOptions = DEFAULT_OPTIONS
) -> tuple[Document, list[str], DocumentCounts]:
    """Clean one document section by section, given `repeated = repeated_lines(all_documents)`; return it cleaned
    (section spans point into its new text), the quality issues that filter it out (empty when kept), and what was
    counted."""
    pieces = [(s.title, doc.text[s.start : s.end]) for s in doc.sections] or [("", doc.text)]
    drop = frozenset() if doc.format in _RECORD_FORMATS else repeated
    counts = DocumentCounts()
    blocks: list[Block] = []
    kept_in_doc: list[Kept] = []
    for title, body in pieces:
        lines = []
        for line in clean_text(body).split("\n"):
            if line and line_key(line) in drop:
                counts.header_footer_lines += 1
            elif line and is_boilerplate(line):
                counts.boilerplate_lines += 1
            else:
                lines.append(line)
        body, title = "\n".join(lines), one_line(clean_text(title))
        if options.redact_pii:
            allow, keep_org = options.pii_allow, options.keep_org_contacts
            body, found, kept = redact_keeping(body, options.placeholders, allow=allow, keep_org=keep_org)
            # Titles repeat their section's first line, whose redactions are counted there.
            title = redact_keeping(title, options.placeholders, allow=allow, keep_org=keep_org)[0]
            counts.pii.update(found)
            kept_in_doc.extend(kept)
        blocks.append((title, body))
    counts.pii_kept = _kept_rows(kept_in_doc, doc.source)
    text, sections = assemble(blocks)
    counts.changed = text != doc.text or sections != doc.sections
    counts.language = detect_language(text)
    limits = options.min_chars, options.max_symbol_ratio, options.max_repeat_ratio
    issues = quality_issues(text, *limits) if text else ["no text left"]
    return Document(doc.source, doc.format, text, sections, doc.sha256), issues, counts


def clean_documents(
    documents: list[Document], options: CleanOptions = DEFAULT_OPTIONS
) -> tuple[list[Document], list[tuple[str, str]], CleanReport]:
    """Clean every document with `clean_document`; return the kept documents, (source, reason) for those filtered
    out, and a report. Section spans of the returned documents point into their new text."""
    repeated = repeated_lines(documents)
    report = CleanReport()
    kept: list[Document] = []
    for doc in documents:
        cleaned, issues, counts = clean_document(doc, repeated, options)
        report.documents_changed += int(counts.changed)
        report.header_footer_lines += counts.header_footer_lines
        report.boilerplate_lines += counts.boilerplate_lines
        report.pii.update(counts.pii)
        report.pii_kept.extend(counts.pii_kept)
        report.languages[doc.source] = counts.language
        if issues:
            report.filtered.append((doc.source, ", ".join(issues)))
        else:
            kept.append(cleaned)
    report.pii_kept = tally_kept(report.pii_kept)
    return kept, list(report.filtered), report
