"""The ingest stage, streamed: documents → clean → redact PII → dedup → chunks, as Parquet files, batch by batch.

Memory holds one batch of documents at a time (`batch_docs` documents or `batch_chars` characters of text, whichever
comes first), plus per kept document what dedup needs: its source, a MinHash signature (128 × 8 bytes = 1 KB at the
default num_perm), a 24-byte exact key and its modification time. The passes, over files in `work_dir`:

    1. load      docs/ → loaded.parquet, counting the running header/footer lines across documents on the way
    2. clean     loaded.parquet → cleaned.parquet (kept rows only), sketching each kept document for dedup;
                 then group duplicates from the sketches, reading back only the texts it has to compare
    3. chunk     cleaned.parquet minus duplicates → documents.parquet, and their chunks → chunks.parquet

Every batch function is per document, so the rows are the same as cleaning, deduplicating and chunking the whole
corpus in memory (`clean_documents`, `dedup_documents`, `chunk_documents`), whatever the batch size or engine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hangjia.core.errors import HangjiaError
from hangjia.corpus.batch_runner import map_batches
from hangjia.corpus.batches import DOCUMENT_SCHEMA, chunk_batch, clean_batch, clean_results, documents_table
from hangjia.corpus.clean import CleanOptions, CleanReport, RepeatedLines, tally_kept
from hangjia.corpus.dedup import Cluster, Embed, group_duplicates, sketch
from hangjia.corpus.documents import MAX_FILE_BYTES, Document, Skipped, check_folder, iter_documents, none_loaded

BATCH_DOCS = 256  # documents per batch: 256 × a few KB is typical; a batch of long manuals stops at BATCH_CHARS
BATCH_CHARS = 32 * 2**20  # characters of text per batch: 32 Mi characters is 32–128 MB as Python strings


@dataclass
class Ingested:
    """What `ingest_documents` wrote and found."""

    documents: Path
    """documents.parquet: the kept documents (DOCUMENT_SCHEMA), in load order."""
    chunks: Path
    """chunks.parquet: their chunks (CHUNK_SCHEMA), in document order."""
    document_count: int
    chunk_count: int
    skipped: list[Skipped]
    filtered: list[tuple[str, str]]
    """(source, reason) for documents left out by the quality filters."""
    cleaning: dict[str, Any]
    """CleanReport.to_dict(), or {} when neither cleaning nor redaction ran."""
    clusters: list[Cluster] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    """Kept documents per format."""


def ingest_documents(
    docs_dir: Path,
    work_dir: Path,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    clean_options: CleanOptions | None = None,
    drop_repeated: bool = True,
    dedup: bool = True,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    semantic_threshold: float | None = None,
    embed: Embed | None = None,
    chunk_tokens: int = 160,
    chunk_overlap: int = 24,
    count_tokens: Callable[[str], int] | None = None,
    engine: str = "local",
    on_file: Callable[[str], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    batch_docs: int = BATCH_DOCS,
    batch_chars: int = BATCH_CHARS,
) -> Ingested:
    """Load, clean, dedup and chunk every document under docs_dir into Parquet files in work_dir.

    clean_options say how to clean and redact, or None to do neither; drop_repeated drops the running headers
    and footers found across all documents. Dedup keeps the newest of each group (see `hangjia.corpus.dedup`);
    the semantic stage runs when `embed` is given.
    """
    status = on_status or (lambda _: None)
    files = check_folder(docs_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    loaded_path, cleaned_path = work_dir / "loaded.parquet", work_dir / "cleaned.parquet"

    repeated = RepeatedLines() if clean_options is not None and drop_repeated else None
    loaded, skipped = _load(docs_dir, loaded_path, repeated, on_file, max_file_bytes, batch_docs, batch_chars)
    if not loaded:
        raise none_loaded(docs_dir, files, skipped)

    status(f"cleaning ({engine})")
    clean_fn = None
    if clean_options is not None:
        found = frozenset(repeated.result()) if repeated is not None else frozenset()
        clean_fn = partial(clean_batch, repeated=found, options=clean_options)
    sketches = _Sketches(docs_dir, num_perm) if dedup else None
    report = _clean(loaded_path, cleaned_path, clean_fn, sketches, engine)
    loaded_path.unlink()
    if report is not None and len(report.filtered) == loaded:
        raise HangjiaError(f"All {loaded} documents were filtered out while cleaning: {report.filtered[:3]}.")

    clusters: list[Cluster] = []
    if sketches is not None:
        status("finding duplicates")
        clusters = sketches.group(
            _TextsOnDisk(cleaned_path),
            near_threshold=near_threshold,
            semantic_threshold=semantic_threshold,
            embed=embed,
        )
    dropped = {m for c in clusters for m in c.members if m != c.kept}

    status(f"chunking ({engine})")
    chunk_fn = partial(chunk_batch, max_len=chunk_tokens, overlap=chunk_overlap, count_tokens=count_tokens)
    result = Ingested(
        work_dir / "documents.parquet",
        work_dir / "chunks.parquet",
        0,
        0,
        skipped,
        list(report.filtered) if report is not None else [],
        report.to_dict() if report is not None else {},
        clusters,
    )
    _chunk(cleaned_path, result, dropped, chunk_fn, engine)
    cleaned_path.unlink()
    return result


def _load(
    docs_dir: Path,
    path: Path,
    repeated: RepeatedLines | None,
    on_file: Callable[[str], None] | None,
    max_file_bytes: int,
    batch_docs: int,
    batch_chars: int,
) -> tuple[int, list[Skipped]]:
    """Pass 1: every document into a Parquet file, one row group per batch; the number loaded and those skipped."""
    skipped: list[Skipped] = []
    batch: list[Document] = []
    loaded = chars = 0
    with pq.ParquetWriter(path, DOCUMENT_SCHEMA, compression="zstd") as writer:
        for item in iter_documents(docs_dir, on_file, max_file_bytes=max_file_bytes):
            if isinstance(item, Skipped):
                skipped.append(item)
                continue
            if repeated is not None:
                repeated.add(item)
            batch.append(item)
            loaded, chars = loaded + 1, chars + len(item.text)
            if len(batch) >= batch_docs or chars >= batch_chars:
                writer.write_table(documents_table(batch))
                batch, chars = [], 0
        if batch:
            writer.write_table(documents_table(batch))
    return loaded, skipped


def _row_groups(path: Path) -> Iterator[pa.Table]:
    """A Parquet file one row group (one batch as written) at a time."""
    file = pq.ParquetFile(path)
    for i in range(file.num_row_groups):
        yield file.read_row_group(i)


def _clean(
    loaded: Path, cleaned: Path, clean_fn: Callable | None, sketches: _Sketches | None, engine: str
) -> CleanReport | None:
    """Pass 2: the kept rows of each batch, cleaned, into `cleaned` (and sketched); the report of all batches."""
    report = CleanReport() if clean_fn is not None else None
    with pq.ParquetWriter(cleaned, DOCUMENT_SCHEMA, compression="zstd") as writer:
        for table in _row_groups(loaded):
            if clean_fn is not None:
                table, _, part = clean_results(map_batches(table, clean_fn, engine=engine))
                _merge(report, part)
            if table.num_rows:
                writer.write_table(table)
                if sketches is not None:
                    sketches.add(table)
    return report


def _merge(report: CleanReport, part: CleanReport) -> None:
    report.documents_changed += part.documents_changed
    report.header_footer_lines += part.header_footer_lines
    report.boilerplate_lines += part.boilerplate_lines
    report.languages.update(part.languages)
    report.filtered.extend(part.filtered)
    report.pii.update(part.pii)
    report.pii_kept = tally_kept(report.pii_kept + part.pii_kept)


def _chunk(cleaned: Path, result: Ingested, dropped: set[str], chunk_fn: Callable, engine: str) -> None:
    """Pass 3: the documents that are not dropped duplicates, and their chunks, into result's files."""
    formats: Counter[str] = Counter()
    chunk_schema = chunk_fn(documents_table([])).schema
    with (
        pq.ParquetWriter(result.documents, DOCUMENT_SCHEMA, compression="zstd") as documents,
        pq.ParquetWriter(result.chunks, chunk_schema, compression="zstd") as chunks,
    ):
        for table in _row_groups(cleaned):
            table = table.filter(pa.array([s not in dropped for s in table["source"].to_pylist()], pa.bool_()))
            if not table.num_rows:
                continue
            documents.write_table(table)
            chunked = map_batches(table, chunk_fn, engine=engine)
            chunks.write_table(chunked)
            formats.update(table["format"].to_pylist())
            result.document_count += table.num_rows
            result.chunk_count += chunked.num_rows
    result.formats = dict(formats)


class _Sketches:
    """What dedup needs of each kept document, added a batch at a time: source, signature, exact key, mtime."""

    def __init__(self, docs_dir: Path, num_perm: int):
        self.docs_dir, self.num_perm = docs_dir, num_perm
        self.ids: list[str] = []
        self.sigs: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self.dates: dict[str, float] = {}  # zip members have none: their archive's time says nothing of them

    def add(self, table: pa.Table) -> None:
        sources = table["source"].to_pylist()
        sigs, keys = sketch(table["text"].to_pylist(), self.num_perm)
        self.ids += sources
        self.sigs.append(sigs)
        self.keys.append(keys)
        for source in sources:
            if (self.docs_dir / source).is_file():
                self.dates[source] = (self.docs_dir / source).stat().st_mtime

    def group(self, text_of: Callable[[list[int]], list[str]], **options: Any) -> list[Cluster]:
        sigs = np.concatenate(self.sigs) if self.sigs else np.zeros((0, self.num_perm), np.uint64)
        keys = np.concatenate(self.keys) if self.keys else np.zeros((0, 3), np.uint64)
        return group_duplicates(self.ids, sigs, keys, text_of, dates=self.dates, **options)


class _TextsOnDisk:
    """`text_of` for group_duplicates: the texts of some rows of a Parquet file, reading only their row groups."""

    def __init__(self, path: Path):
        self.file = pq.ParquetFile(path)
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.cumsum([0, *sizes])

    def __call__(self, rows: list[int]) -> list[str]:
        rows_ = np.asarray(rows, dtype=np.int64)
        group = np.searchsorted(self.starts, rows_, side="right") - 1
        texts: list[str] = [""] * len(rows_)
        for g in np.unique(group).tolist():
            at = np.flatnonzero(group == g)
            column = self.file.read_row_group(g, columns=["text"]).column("text")
            for k, text in zip(at.tolist(), column.take(rows_[at] - self.starts[g]).to_pylist(), strict=True):
                texts[k] = text
        return texts
