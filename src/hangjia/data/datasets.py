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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hangjia import __version__
from hangjia.errors import HangjiaError


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


def table_hash(table: pa.Table) -> str:
    """Hash of the rows and schema, independent of how the table is split into record batches."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())  # one batch: the bytes no longer depend on chunking
    return hashlib.sha256(memoryview(sink.getvalue())).hexdigest()


class DatasetStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def save(
        self,
        name: str,
        table: pa.Table,
        *,
        parents: list[str] | None = None,
        stage: str = "",
        config: dict[str, Any] | None = None,
        stats: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        """Store `table` as a new version of `name` (or return the existing one with the same content)."""
        content = table_hash(table)
        version = content[:12]
        target = self.root / name / version
        if (target / "manifest.json").is_file():
            return self.get(name, version)
        tmp = self.root / name / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        pq.write_table(table, tmp / "data.parquet", compression="zstd")
        manifest = {
            "name": name,
            "version": version,
            "content_hash": content,
            "rows": table.num_rows,
            "columns": table.column_names,
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
