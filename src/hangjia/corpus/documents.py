"""Load a folder of documents (txt, md, html, json, jsonl, csv, tsv, pdf, docx, xlsx, parquet, and zip archives
of them) as plain text with sections.

Document and Skipped live here; the per-format loaders are in `hangjia.corpus.loaders`.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from hangjia.core.errors import HangjiaError
from hangjia.corpus.loaders import FORMATS, LOADERS
from hangjia.corpus.text import Section

MAX_FILE_BYTES = 50 * 2**20  # files, and zip members unpacked, over this are skipped; load_documents can override it
ARCHIVES = {".zip"}  # expanded here, not by a loader: one archive holds many documents


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


def _too_large(max_file_bytes: int) -> str:
    return f"larger than {max_file_bytes / 2**20:g} MB"


def _parse(raw: bytes, rel: str) -> Document | Skipped:
    """One file's bytes through the loader for its suffix."""
    suffix = PurePosixPath(rel).suffix.lower()
    if not raw.strip():
        return Skipped(rel, "empty file")
    try:
        text, sections = LOADERS[suffix](raw, rel)
    except ValueError as e:  # loaders raise ValueError with a readable reason
        return Skipped(rel, str(e))
    except Exception as e:  # a bug or odd input in one file must not stop the whole run
        return Skipped(rel, f"could not be read ({type(e).__name__}: {e})")
    if not text.strip():
        return Skipped(rel, "no text content after parsing")
    fmt = FORMATS.get(suffix, suffix.lstrip("."))
    return Document(rel, fmt, text, sections, hashlib.sha256(raw).hexdigest())


def _member_name(info: zipfile.ZipInfo) -> str:
    """The member's path; without the UTF-8 flag zipfile reads names as cp437, but Windows writes GBK in China."""
    name = info.filename
    if not info.flag_bits & 0x800:
        for encoding in ("utf-8", "gbk"):
            try:
                name = info.filename.encode("cp437").decode(encoding)
                break
            except UnicodeError:
                continue
    return name.replace("\\", "/").lstrip("/")


def _load_zip(raw: bytes, rel: str, max_file_bytes: int) -> Iterator[Document | Skipped]:
    """Each supported member of a zip archive as its own Document with source "archive.zip/inner/path", one at a
    time (an archive can unpack to far more than memory)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        members = sorted(((_member_name(i), i) for i in archive.infolist() if not i.is_dir()), key=lambda m: m[0])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as e:
        yield Skipped(rel, f"corrupt zip archive ({e})")
        return
    found = False
    for name, info in members:
        if any(part.startswith(".") or part == "__MACOSX" for part in name.split("/")):
            continue  # hidden files and macOS resource forks, as in a folder
        found = True
        path, suffix = f"{rel}/{name}", PurePosixPath(name).suffix.lower()
        if suffix in ARCHIVES:
            yield Skipped(path, "archive inside an archive; extract it first")
        elif suffix not in LOADERS:
            yield Skipped(path, f"unsupported file type {suffix or '(no extension)'}")
        elif info.flag_bits & 0x1:
            yield Skipped(path, "encrypted zip member (password protected)")
        elif info.file_size > max_file_bytes:  # checked before unpacking, so a zip bomb is never expanded
            yield Skipped(path, _too_large(max_file_bytes))
        else:
            try:
                with archive.open(info) as f:
                    data = f.read(max_file_bytes + 1)  # never more than the limit, whatever the header says
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, EOFError, zlib.error) as e:
                yield Skipped(path, f"could not be unpacked ({e})")
                continue
            yield Skipped(path, _too_large(max_file_bytes)) if len(data) > max_file_bytes else _parse(data, path)
    if not found:
        yield Skipped(rel, "zip archive holds no files to load")


def _load_one(path: Path, rel: str, max_file_bytes: int) -> Iterator[Document | Skipped]:
    """A file as one Document or Skipped; a zip archive as one per member."""
    suffix = path.suffix.lower()
    if suffix not in LOADERS and suffix not in ARCHIVES:
        yield Skipped(rel, f"unsupported file type {suffix or '(no extension)'}")
        return
    try:
        if path.stat().st_size > max_file_bytes:
            yield Skipped(rel, _too_large(max_file_bytes))
            return
        raw = path.read_bytes()
    except OSError as e:
        yield Skipped(rel, f"could not be read ({e.strerror or type(e).__name__})")
        return
    if suffix in ARCHIVES:
        yield from _load_zip(raw, rel, max_file_bytes)
    else:
        yield _parse(raw, rel)


def iter_documents(
    root: Path, on_file: Callable[[str], None] | None = None, *, max_file_bytes: int = MAX_FILE_BYTES
) -> Iterator[Document | Skipped]:
    """Each supported file under root, and each member of its zip archives, as a Document or Skipped, one at a
    time (sorted by path), so a corpus larger than memory can be streamed; on_file is called after each file."""
    for path in iter_files(Path(root)):
        rel = path.relative_to(root).as_posix()
        yield from _load_one(path, rel, max_file_bytes)
        if on_file is not None:
            on_file(rel)


def check_folder(root: Path) -> int:
    """The number of files under root; a HangjiaError for a missing or empty folder."""
    root = Path(root)
    if not root.is_dir():
        raise HangjiaError(f"Docs folder {root} does not exist; pass --docs with a folder of documents.")
    files = len(iter_files(root))
    if not files:
        raise HangjiaError(f"Docs folder {root} has no files; add .md, .txt, .html, .json or .csv documents.")
    return files


def none_loaded(root: Path, files: int, skipped: list[Skipped]) -> HangjiaError:
    """The error for a folder in which no file could be loaded."""
    return HangjiaError(
        f"None of the {files} files in {root} could be loaded ({len(skipped)} skipped, "
        f"e.g. {skipped[0].path}: {skipped[0].reason}); add supported text documents."
    )


def load_documents(
    root: Path, on_file: Callable[[str], None] | None = None, *, max_file_bytes: int = MAX_FILE_BYTES
) -> tuple[list[Document], list[Skipped]]:
    """Load every supported file under root, and each member of its zip archives (`iter_documents`, collected).

    Unreadable files and files (or members) over max_file_bytes are reported as Skipped, not raised;
    on_file is called once per file found, archives included.
    """
    files = check_folder(root)
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for result in iter_documents(root, on_file, max_file_bytes=max_file_bytes):
        (docs if isinstance(result, Document) else skipped).append(result)
    if not docs:
        raise none_loaded(root, files, skipped)
    return docs, skipped
