"""Vector stores for dense retrieval: one small interface, an in-memory numpy store (the default) and LanceDB.

A store holds unit vectors under integer ids (a chunk's position in the index) and answers a query vector with the
k nearest ids and their cosine similarities. `memory` keeps a float32 matrix and scans it: 10k chunks × 384 dims is
15 MB, and a query is one matrix-vector product (~1 ms). `lancedb` keeps the vectors on disk in the Lance columnar
format and reads them in batches per query, so a corpus whose vectors do not fit in memory still works; past
`ANN_MIN_ROWS` rows it also builds an IVF-PQ index so a query no longer scans every row.

Why LanceDB (`pip install hangjia[lancedb]`, ~180 MB installed), measured on this machine (Python 3.11.7):
- sqlite-vec is a 160 kB wheel, but it is a SQLite extension, and this Python's sqlite3 was built without
  `enable_load_extension` (as are several stock macOS and pyenv builds), so it cannot load; it also only brute-forces.
- FAISS (faiss-cpu, 19 MB wheel) searches an index held in memory; going past memory needs an IVF index trained
  first and its inverted lists merged on disk (OnDiskInvertedLists), a second code path to maintain.
- LanceDB is made for data larger than memory: the table is files on disk, appended in batches while embedding, read
  back in batches at query time, with on-disk ANN indexes; it speaks Arrow, which the datasets already use.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from hangjia.core.errors import HangjiaError

STORE_FILE = "store.json"
# Past this many rows the LanceDB store builds an IVF-PQ index (approximate); below it, exact scans are fast enough:
# 100k × 384 float32 is 150 MB read per query.
ANN_MIN_ROWS = 100_000


class VectorStore(Protocol):
    kind: str

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Append vectors (rows, normalised to unit length here) under the given ids."""

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest ids and their cosine similarities to `vector`, best first."""

    def get(self, ids: Sequence[int]) -> np.ndarray:
        """The stored (unit) vectors of these ids, in the given order."""

    def save(self) -> None:
        """Write what is still in memory to the store's folder."""

    def __len__(self) -> int: ...


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a 1-d vector becomes one row); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors.reshape(1, -1) if vectors.ndim == 1 else vectors
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _write_kind(directory: Path, kind: str, dim: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STORE_FILE).write_text(json.dumps({"kind": kind, "dim": dim}), encoding="utf-8")


class MemoryVectorStore:
    """A float32 matrix in memory, saved as `vectors.npy` + `ids.npy`; exact cosine search by a matrix product."""

    kind = "memory"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._batches: list[tuple[np.ndarray, np.ndarray]] = []  # (ids, unit vectors) as added, joined on first read
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors: np.ndarray | None = None
        self._rows: dict[int, int] = {}

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        self._batches.append((np.asarray(ids, dtype=np.int64), unit(vectors)))

    def _joined(self) -> np.ndarray | None:
        """The vectors as one matrix; batches are joined once, not on every add (which would copy n²/batch rows)."""
        if self._batches:
            ids = [self._ids, *(b[0] for b in self._batches)]
            vectors = ([] if self._vectors is None else [self._vectors]) + [b[1] for b in self._batches]
            self._ids, self._vectors, self._batches = np.concatenate(ids), np.vstack(vectors), []
            self._rows = {int(i): row for row, i in enumerate(self._ids)}
        return self._vectors

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = self._joined()
        if vectors is None or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = vectors @ unit(vector)[0]
        order = np.argsort(-scores, kind="stable")[:k]
        return self._ids[order], scores[order]

    def get(self, ids: Sequence[int]) -> np.ndarray:
        vectors = self._joined()
        assert vectors is not None, "empty store"
        return vectors[[self._rows[int(i)] for i in ids]]

    def save(self) -> None:
        vectors = self._joined()
        _write_kind(self.directory, self.kind, 0 if vectors is None else vectors.shape[1])
        np.save(self.directory / "ids.npy", self._ids)
        np.save(self.directory / "vectors.npy", vectors if vectors is not None else np.zeros((0, 0), np.float32))

    @classmethod
    def load(cls, directory: Path) -> MemoryVectorStore:
        store = cls(directory)
        store.add(np.load(store.directory / "ids.npy"), np.load(store.directory / "vectors.npy"))
        return store

    def __len__(self) -> int:
        return len(self._ids) + sum(len(b[0]) for b in self._batches)


class LanceVectorStore:
    """A LanceDB table (`id`, `vector`) in the store's folder: rows go to disk as they are added, queries read them
    back in batches, so memory stays bounded by a batch rather than the corpus."""

    kind = "lancedb"
    _TABLE = "vectors"

    def __init__(self, directory: Path):
        try:
            import lancedb
        except ImportError as exc:
            raise HangjiaError(
                "rag.vector_store: lancedb needs the LanceDB package; run `pip install 'hangjia[lancedb]'` "
                "or set rag.vector_store: memory."
            ) from exc
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._db = lancedb.connect(str(self.directory))
        exists = (self.directory / f"{self._TABLE}.lance").is_dir()  # a local table is the folder <name>.lance
        self._table = self._db.open_table(self._TABLE) if exists else None

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> None:
        import pyarrow as pa

        vectors = unit(vectors)
        rows = pa.table(
            {
                "id": pa.array(np.asarray(ids, dtype=np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1]),
            }
        )
        if self._table is None:
            self._table = self._db.create_table(self._TABLE, rows)
        else:
            self._table.add(rows)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._table is None or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        query = unit(vector)[0]
        # "dot" distance is 1 - u·v; for unit vectors u·v is the cosine.
        search = self._table.search(query).distance_type("dot").select(["id", "_distance"]).limit(k)
        if self._table.list_indices():  # IVF-PQ distances are approximate: re-rank 10 × k candidates exactly
            search = search.nprobes(20).refine_factor(10)
        found = search.to_arrow()
        ids = found.column("id").to_numpy()
        cosines = 1 - found.column("_distance").to_numpy().astype(np.float32)
        order = np.lexsort((ids, -cosines))  # best first; ties by id, as the memory store's stable sort
        return ids[order], cosines[order]

    def get(self, ids: Sequence[int]) -> np.ndarray:
        assert self._table is not None, "empty store"
        wanted = [int(i) for i in ids]
        found = (
            self._table.search()
            .where(f"id IN ({', '.join(map(str, wanted))})")
            .select(["id", "vector"])
            .limit(len(wanted))
            .to_arrow()
        )
        rows = dict(zip(found.column("id").to_pylist(), found.column("vector").to_pylist(), strict=True))
        return np.asarray([rows[i] for i in wanted], dtype=np.float32)

    def save(self) -> None:
        if self._table is not None and len(self) >= ANN_MIN_ROWS and not self._table.list_indices():
            self._table.create_index(metric="dot", vector_column_name="vector", index_type="IVF_PQ")
        dim = 0 if self._table is None else self._table.schema.field("vector").type.list_size
        _write_kind(self.directory, self.kind, dim)

    @classmethod
    def load(cls, directory: Path) -> LanceVectorStore:
        return cls(directory)

    def __len__(self) -> int:
        return 0 if self._table is None else self._table.count_rows()


STORES: dict[str, type[MemoryVectorStore] | type[LanceVectorStore]] = {
    MemoryVectorStore.kind: MemoryVectorStore,
    LanceVectorStore.kind: LanceVectorStore,
}


def new_store(kind: str, directory: Path) -> VectorStore:
    """An empty store of this kind that saves into `directory`."""
    if kind not in STORES:
        raise HangjiaError(f"Unknown vector store '{kind}'; choose one of: {', '.join(STORES)}.")
    if Path(directory).exists():
        shutil.rmtree(directory)
    return STORES[kind](directory)


def load_store(directory: Path) -> VectorStore:
    """The store saved in `directory`, of the kind its store.json names."""
    meta = Path(directory) / STORE_FILE
    if not meta.is_file():
        raise HangjiaError(f"No vector store in {directory}; rebuild the index with `hangjia ingest --force`.")
    return STORES[json.loads(meta.read_text(encoding="utf-8"))["kind"]].load(directory)
