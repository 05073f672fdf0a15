"""Load a folder of documents (txt, md, html, json, jsonl, csv, tsv) as plain text with sections.

Document and Skipped live here; the per-format loaders are in `hangjia.data.loaders`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from hangjia.data.loaders import FORMATS, LOADERS
from hangjia.data.text import Section
from hangjia.errors import HangjiaError


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
    fmt = FORMATS.get(suffix, suffix.lstrip("."))
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
