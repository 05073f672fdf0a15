"""Load a folder of documents (txt, md, html, json, jsonl, csv, tsv) as plain text with sections."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bs4 import BeautifulSoup, NavigableString, Tag

from hangjia.errors import HangjiaError


@dataclass(frozen=True)
class Section:
    """A titled span of `Document.text`; for json/csv one record."""

    title: str
    start: int
    end: int


@dataclass
class Document:
    """One source file as plain text."""

    source: str
    format: str
    text: str
    sections: list[Section]
    sha256: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Document:
        sections = [Section(**s) for s in d["sections"]]
        return cls(d["source"], d["format"], d["text"], sections, d["sha256"])


@dataclass(frozen=True)
class Skipped:
    """A file that was not loaded, and why."""

    path: str
    reason: str


Block = tuple[str, str]  # (section title, section text)


# ---------------------------------------------------------------- shared helpers


def _decode(raw: bytes) -> str:
    if b"\x00" in raw:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 text (bad byte at offset {e.start})") from None


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _assemble(blocks: list[Block]) -> tuple[str, list[Section]]:
    """Join normalised blocks with blank lines and record each block's span as a section."""
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for title, body in blocks:
        body = _normalise(body)
        if not body.strip():
            continue
        if parts:
            pos += 2  # the "\n\n" separator
        sections.append(Section(title, pos, pos + len(body)))
        parts.append(body)
        pos += len(body)
    return "\n\n".join(parts), sections


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- txt

_RULE = re.compile(r"^\s*([=\-_*~])\1{2,}\s*$")  # ----- or ===== (one unbroken run)
_NUMBERED = re.compile(r"^\d+(\.\d+)*\.?\s+[A-Z]")  # "3. Installation", "1.1 Scope of delivery"


def _is_txt_heading(lines: list[str], i: int) -> bool:
    line = lines[i]
    text = line.strip()
    prev_blank = i == 0 or not lines[i - 1].strip()
    boxed = i > 0 and bool(_RULE.match(lines[i - 1]))  # a line under a rule starts a banner, not a paragraph
    if not text or not (prev_blank or boxed) or line != line.lstrip() or len(text) > 80 or _RULE.match(line):
        return False
    if prev_blank and i + 1 < len(lines) and _RULE.match(lines[i + 1]):
        return True  # underlined with ==== or ----
    letters = [c for c in text if c.isalpha()]
    if len(letters) >= 3 and text.upper() == text:
        return True  # ALL-CAPS line such as "P01  LOW WATER FLOW"
    return bool(_NUMBERED.match(text)) and len(text.split()) <= 8 and text[-1] not in ".:;,"


_PAGE_NUMBER = re.compile(r"\bpage\s+\d+(\s+of\s+\d+)?\b", re.IGNORECASE)


def _page_key(line: str) -> str:
    line = _one_line(line)
    return _PAGE_NUMBER.sub("page #", line)  # "Page 2 of 5 ..." and "Page 3 of 5 ..." are the same footer


def _page_noise(lines: list[str]) -> set[str]:
    """Page headers/footers: the same long line on 3+ pages, e.g. "Page 2 of 5 ... KHA-IG-HP-03"."""
    keys = Counter(_page_key(ln) for ln in lines if len(ln.strip()) >= 20 and not _RULE.match(ln))
    return {k for k, n in keys.items() if n >= 3}


def load_txt(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    lines = _normalise(_decode(raw)).split("\n")
    noise = _page_noise(lines)
    blocks: list[Block] = []
    title, body = "", []
    for i, line in enumerate(lines):
        # Rules are decoration; page headers/footers are dropped except at the top, where they hold the title.
        if _RULE.match(line) or (i >= 5 and _page_key(line) in noise):
            continue
        if _is_txt_heading(lines, i):
            blocks.append((title, "\n".join(body)))
            title, body = _one_line(line), []
        body.append(line)
    blocks.append((title, "\n".join(body)))
    return _assemble(blocks)


# ---------------------------------------------------------------- md

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> link text
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)"), r"\1"),  # _italic_, not snake_case
    (re.compile(r"`([^`]*)`"), r"\1"),  # inline code
]
_TABLE_SEP = re.compile(r"^[\s|:-]*-[\s|:-]*$")  # |---|:---:| (with a pipe) or a --- rule
_MD_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")


def _strip_inline(line: str) -> str:
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return line


def _md_table_row(line: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return " | ".join(cells).strip()


def load_md(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    blocks: list[Block] = []
    title, body = "", []
    in_fence = False
    for line in _normalise(_decode(raw)).split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            body.append(line)
            continue
        heading = _ATX.match(line)
        if heading:
            blocks.append((title, "\n".join(body)))
            title = _strip_inline(heading.group(2))
            body = [title]
        elif (_TABLE_SEP.match(line) and "|" in line) or _MD_RULE.match(line):
            continue  # table separators and horizontal rules are layout, not text
        elif line.lstrip().startswith("|"):
            body.append(_strip_inline(_md_table_row(line)))
        else:
            body.append(_strip_inline(line))
    blocks.append((title, "\n".join(body)))
    return _assemble(blocks)


# ---------------------------------------------------------------- html

_DROP_TAGS = ["script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template", "svg"]
_DROP_MARKERS = ("cookie", "banner", "nav", "footer")
_HEADINGS = {"h1", "h2", "h3", "h4"}
_PARAGRAPH_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "ul",
    "ol",
    "dl",
    "blockquote",
    "pre",
    "table",
    "h5",
    "h6",
    "figure",
    "address",
    "details",
    "body",
}
_LINE_TAGS = {"li", "tr", "br", "dt", "dd", "summary", "figcaption"}


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name in ("html", "body", "main"):
        return False  # a body class like "has-navbar" must not drop the whole page
    marks = " ".join([tag.get("id") or "", *(tag.get("class") or [])]).lower()
    # Whole-word-ish match: "main-nav", "navbar", "cookie-banner" yes; "unavailable", "canvas" no.
    words = re.split(r"[\s_-]+", marks)
    return any(w.startswith(m) or w.endswith(m) for w in words if w for m in _DROP_MARKERS)


class _HtmlText:
    """Walks the DOM and collects (title, text) blocks; headings h1-h4 start a new block."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.title, self.lines, self.inline = "", [], []

    def flush(self, blank: bool = False) -> None:
        text = _one_line("".join(self.inline))
        if text:
            self.lines.append(text)
        self.inline = []
        if blank and self.lines and self.lines[-1]:
            self.lines.append("")  # paragraph break

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # skip comments, doctype, CDATA
                    self.inline.append(str(child))
            elif child.name in _HEADINGS:
                self.flush()
                self.blocks.append((self.title, "\n".join(self.lines)))
                self.title = _one_line(child.get_text(" "))
                self.lines = [self.title, ""]
            elif child.name == "table":
                self.flush(blank=True)
                for row in child.find_all("tr"):
                    cells = [_one_line(c.get_text(" ")) for c in row.find_all(["th", "td"])]
                    self.lines.append(" | ".join(cells))
                self.flush(blank=True)
            elif child.name in _PARAGRAPH_TAGS or child.name in _LINE_TAGS:
                self.flush(blank=child.name in _PARAGRAPH_TAGS)
                self.walk(child)
                self.flush(blank=child.name in _PARAGRAPH_TAGS)
            else:
                self.walk(child)  # inline element: keep its text in the current line


def load_html(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    soup = BeautifulSoup(_decode(raw), "html.parser")
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(_is_boilerplate):
        if not tag.decomposed:
            tag.decompose()
    roots = soup.find_all("main") or soup.find_all("article") or [soup.body or soup]
    walker = _HtmlText()
    for root in roots:
        walker.walk(root)
        walker.flush(blank=True)
    walker.blocks.append((walker.title, "\n".join(walker.lines)))
    return _assemble(walker.blocks)


# ---------------------------------------------------------------- json, jsonl

_LABEL_KEYS = ("name", "title", "id")


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else _one_line(str(value))


def _flatten(obj: dict, prefix: str = "") -> list[str]:
    """Render an object as "key: value" lines; nested keys dotted, lists of scalars joined with ", "."""
    lines = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.extend(_flatten(value, f"{name}."))
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value) and value:
            for n, item in enumerate(value, 1):
                lines.extend(_flatten(item, f"{name}.{n}."))
        elif isinstance(value, list):
            joined = ", ".join(_scalar(v) if not isinstance(v, list | dict) else json.dumps(v) for v in value)
            if joined:
                lines.append(f"{name}: {joined}")
        elif _scalar(value):
            lines.append(f"{name}: {_scalar(value)}")
    return lines


def _record_label(record: dict, n: int) -> str:
    for key in _LABEL_KEYS:
        if _scalar(record.get(key)):
            return _scalar(record[key])
    return f"record {n}"


def _record_blocks(records: list) -> list[Block]:
    blocks = []
    for n, record in enumerate(records, 1):
        if isinstance(record, dict):
            blocks.append((_record_label(record, n), "\n".join(_flatten(record))))
        else:
            blocks.append((f"record {n}", _scalar(record)))
    return blocks


def _json_error(e: json.JSONDecodeError, line: int | None = None) -> ValueError:
    return ValueError(f"invalid JSON at line {line or e.lineno}: {e.msg}")


def load_json(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    try:
        data = json.loads(_decode(raw))
    except json.JSONDecodeError as e:
        raise _json_error(e) from None
    if isinstance(data, list):
        return _assemble(_record_blocks(data))
    if not isinstance(data, dict):
        raise ValueError("JSON holds a single value, not a list of records or an object")
    # Lists of objects become one section per record; everything else goes into a leading section.
    is_records = {k: bool(v) and isinstance(v, list) and all(isinstance(x, dict) for x in v) for k, v in data.items()}
    header = {k: v for k, v in data.items() if not is_records[k]}
    header_title = next((_scalar(header[k]) for k in ("title", "name") if _scalar(header.get(k))), "")
    blocks: list[Block] = [(header_title, "\n".join(_flatten(header)))]
    for key, value in data.items():
        if is_records[key]:
            blocks.extend(_record_blocks(value))
    return _assemble(blocks)


def load_jsonl(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    records = []
    for n, line in enumerate(_decode(raw).splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _json_error(e, n) from None
    return _assemble(_record_blocks(records))


# ---------------------------------------------------------------- csv, tsv


def _load_table(raw: bytes, delimiter: str) -> tuple[str, list[Section]]:
    reader = csv.DictReader(io.StringIO(_decode(raw), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise ValueError("no header row")
    first = reader.fieldnames[0]
    blocks: list[Block] = []
    try:
        for n, row in enumerate(reader, 1):
            fields = [(k if k is not None else "extra", v) for k, v in row.items()]
            values = [(k, ", ".join(v) if isinstance(v, list) else _one_line(v or "")) for k, v in fields]
            line = "; ".join(f"{k}: {v}" for k, v in values if v)
            blocks.append((_one_line(row.get(first) or "") or f"row {n}", line))
    except csv.Error as e:
        raise ValueError(f"malformed CSV at line {reader.line_num}: {e}") from None
    return _assemble(blocks)


def load_csv(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    return _load_table(raw, ",")


def load_tsv(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    return _load_table(raw, "\t")


LOADERS: dict[str, Callable[[bytes, str], tuple[str, list[Section]]]] = {
    ".txt": load_txt,
    ".text": load_txt,
    ".md": load_md,
    ".markdown": load_md,
    ".html": load_html,
    ".htm": load_html,
    ".json": load_json,
    ".jsonl": load_jsonl,
    ".csv": load_csv,
    ".tsv": load_tsv,
}
# The format name stored on a Document, for suffixes that are aliases.
_FORMATS = {".text": "txt", ".markdown": "md", ".htm": "html", ".tsv": "csv"}


# ---------------------------------------------------------------- folder


def iter_files(root: Path) -> list[Path]:
    """All files under root, sorted, skipping hidden files and folders."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _load_one(path: Path, rel: str) -> Document | Skipped:
    suffix = path.suffix.lower()
    loader = LOADERS.get(suffix)
    if loader is None:
        return Skipped(rel, f"unsupported file type {suffix or '(no extension)'}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        return Skipped(rel, f"could not be read ({e.strerror or type(e).__name__})")
    if not raw.strip():
        return Skipped(rel, "empty file")
    try:
        text, sections = loader(raw, rel)
    except ValueError as e:  # loaders raise ValueError with a readable reason
        return Skipped(rel, str(e))
    except Exception as e:  # a bug or odd input in one file must not stop the whole run
        return Skipped(rel, f"could not be read ({type(e).__name__}: {e})")
    if not text.strip():
        return Skipped(rel, "no text content after parsing")
    fmt = _FORMATS.get(suffix, suffix.lstrip("."))
    return Document(rel, fmt, text, sections, hashlib.sha256(raw).hexdigest())


def load_documents(root: Path, on_file: Callable[[str], None] | None = None) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under root; unreadable files are reported as Skipped, not raised."""
    root = Path(root)
    if not root.is_dir():
        raise HangjiaError(f"Docs folder {root} does not exist; pass --docs with a folder of documents.")
    files = iter_files(root)
    if not files:
        raise HangjiaError(f"Docs folder {root} has no files; add .md, .txt, .html, .json or .csv documents.")
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        result = _load_one(path, rel)
        (docs if isinstance(result, Document) else skipped).append(result)
        if on_file is not None:
            on_file(rel)
    if not docs:
        raise HangjiaError(
            f"None of the {len(files)} files in {root} could be loaded ({len(skipped)} skipped, "
            f"e.g. {skipped[0].path}: {skipped[0].reason}); add supported text documents."
        )
    return docs, skipped
