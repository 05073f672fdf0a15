"""One loader per file type, `(raw bytes, relative path) -> (text, sections)`, registered by suffix in LOADERS."""

from __future__ import annotations

from collections.abc import Callable

from hangjia.corpus.loaders.docx import load_docx
from hangjia.corpus.loaders.html import load_html
from hangjia.corpus.loaders.md import load_md
from hangjia.corpus.loaders.parquet import load_parquet
from hangjia.corpus.loaders.pdf import load_pdf
from hangjia.corpus.loaders.records import load_csv, load_json, load_jsonl, load_tsv
from hangjia.corpus.loaders.txt import load_txt
from hangjia.corpus.loaders.xlsx import load_xlsx
from hangjia.corpus.text import Section

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
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".xlsx": load_xlsx,
    ".parquet": load_parquet,
}
# The format name stored on a Document, for suffixes that are aliases.
FORMATS = {".text": "txt", ".markdown": "md", ".htm": "html", ".tsv": "csv"}
