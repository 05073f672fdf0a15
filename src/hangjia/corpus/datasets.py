"""Versioned datasets: Parquet plus a manifest, content-addressed, with parents for lineage.

```
WS/datasets/<name>/<version>/data.parquet     the rows
WS/datasets/<name>/<version>/manifest.json    content hash, parents, stage, config, code version, counts
```
A version id is the first 12 hex digits of the content hash, so saving the same rows twice is a
no-op and two workspaces that made the same data agree on its id. Versions are written to a
temporary folder and renamed into place, so a crash never leaves a half-written version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hangjia import __version__
from hangjia.core.errors import HangjiaError


@dataclass
class DatasetVersion:
    name: str
    version: str
    path: Path
    manifest: dict[str, Any] = field(repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def rows(self) -> int:
        return self.manifest["rows"]

    def read(self, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path / "data.parquet", columns=columns)


HASH_ROWS = 1024  # rows per hashed slice: a version id never depends on how the rows came split into batches


def content_hash(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> str:
    """Hash of the schema and rows, read batch by batch and re-cut into HASH_ROWS-row slices, so a table in memory
    and the same rows streamed from a Parquet file with any row groups hash alike."""
    digest = hashlib.sha256(pa.schema([f.with_type(_canonical(f.type)) for f in schema]).serialize())
    for piece in _slices(batches, HASH_ROWS):
        # A fresh copy (take) in one batch: a slice can serialize bytes of its neighbours with it, a copy cannot.
        for batch in piece.take(pa.array(range(piece.num_rows))).combine_chunks().to_batches():
            digest.update(batch.serialize())
    return digest.hexdigest()


def _canonical(t: pa.DataType) -> pa.DataType:
    """The type with every list's value field named "item": Parquet reads lists back with it named "element"."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        make = pa.large_list if pa.types.is_large_list(t) else pa.list_
        return make(pa.field("item", _canonical(t.value_type), t.value_field.nullable))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_canonical(f.type)) for f in t])
    return t


def _slices(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """The rows of batches as consecutive tables of `size` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        if batch.num_rows:
            pending.append(batch)
            rows += batch.num_rows
        while rows >= size:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, size)
            pending, rows = table.slice(size).to_batches(), rows - size
    if rows:
        yield pa.Table.from_batches(pending)


def table_hash(table: pa.Table) -> str:
    """Hash of the rows and schema, independent of how the table is split into record batches."""
    return content_hash(table.schema, table.to_batches())


def file_hash(path: Path) -> str:
    """`table_hash` of a Parquet file's rows, read a slice at a time (never the whole file)."""
    file = pq.ParquetFile(path)
    return content_hash(file.schema_arrow, file.iter_batches(batch_size=HASH_ROWS))


class DatasetStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def save(self, name: str, table: pa.Table, **meta: Any) -> DatasetVersion:
        """Store `table` as a new version of `name` (or return the existing one with the same content).

        `meta`: parents (refs of the versions it was made from), stage, config and stats, kept in the manifest."""
        return self._store(
            name,
            table_hash(table),
            lambda path: pq.write_table(table, path, compression="zstd"),
            rows=table.num_rows,
            columns=table.column_names,
            **meta,
        )

    def save_file(self, name: str, parquet: Path, **meta: Any) -> DatasetVersion:
        """Adopt an already written Parquet file as a version of `name` (moved into the store, never loaded whole);
        the same rows give the same version as `save` does. `meta` as for `save`."""
        info = pq.ParquetFile(parquet)
        return self._store(
            name,
            file_hash(parquet),
            lambda path: shutil.move(parquet, path),
            rows=info.metadata.num_rows,
            columns=info.schema_arrow.names,
            **meta,
        )

    def _store(
        self,
        name: str,
        content: str,
        write: Callable[[Path], Any],
        *,
        rows: int,
        columns: list[str],
        parents: list[str] | None = None,
        stage: str = "",
        config: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        version = content[:12]
        target = self.root / name / version
        if (target / "manifest.json").is_file():
            return self.get(name, version)
        tmp = self.root / name / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write(tmp / "data.parquet")
        manifest = {
            "name": name,
            "version": version,
            "content_hash": content,
            "rows": rows,
            "columns": columns,
            "parents": parents or [],
            "stage": stage,
            "config": config or {},
            "stats": stats or {},
            "code_version": f"hangjia {__version__}",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "created_ns": time.time_ns(),  # orders versions made within one second
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        tmp.rename(target)
        return DatasetVersion(name, version, target, manifest)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[DatasetVersion]:
        """All versions of `name`, oldest first."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            manifest_path = path / "manifest.json"
            if path.is_dir() and not path.name.startswith(".") and manifest_path.is_file():
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                found.append(DatasetVersion(name, path.name, path, manifest))
        return sorted(found, key=lambda v: (v.manifest.get("created_ns", 0), v.version))

    def get(self, name: str, version: str | None = None) -> DatasetVersion:
        """A version by id (or unique prefix); the newest when `version` is None or 'latest'."""
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none yet; run `hangjia ingest`"
            raise HangjiaError(f"No dataset named '{name}' in {self.root} (datasets: {known}).")
        if version in (None, "latest"):
            return versions[-1]
        matches = [v for v in versions if v.version.startswith(version)]
        if len(matches) != 1:
            listed = ", ".join(v.version for v in versions)
            raise HangjiaError(f"Dataset {name} has no single version '{version}' (versions: {listed}).")
        return matches[0]

    def resolve(self, ref: str) -> DatasetVersion:
        """'name', 'name@latest' or 'name@<version prefix>'."""
        name, _, version = ref.partition("@")
        return self.get(name, version or None)

    def lineage(self, ref: str) -> list[DatasetVersion]:
        """The version and every ancestor, breadth first."""
        seen, order, queue = set(), [], [self.resolve(ref)]
        while queue:
            current = queue.pop(0)
            if current.ref in seen:
                continue
            seen.add(current.ref)
            order.append(current)
            queue.extend(self.resolve(parent) for parent in current.manifest["parents"])
        return order


def diff(old: pa.Table, new: pa.Table, key: str) -> dict[str, list[Any]]:
    """Rows added, removed and changed between two versions, matched on `key`."""
    old_rows = {row[key]: row for row in old.to_pylist()}
    new_rows = {row[key]: row for row in new.to_pylist()}
    return {
        "added": sorted(k for k in new_rows if k not in old_rows),
        "removed": sorted(k for k in old_rows if k not in new_rows),
        "changed": sorted(k for k in new_rows if k in old_rows and new_rows[k] != old_rows[k]),
    }
