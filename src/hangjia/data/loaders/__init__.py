"""One loader per file type, `(raw bytes, relative path) -> (text, sections)`, registered by suffix in LOADERS."""

from __future__ import annotations

from collections.abc import Callable

from hangjia.data.loaders.html import load_html
from hangjia.data.loaders.md import load_md
from hangjia.data.loaders.records import load_csv, load_json, load_jsonl, load_tsv
from hangjia.data.loaders.txt import load_txt
from hangjia.data.text import Section

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
FORMATS = {".text": "txt", ".markdown": "md", ".htm": "html", ".tsv": "csv"}
