"""Streaming ingest: the same rows, clusters and dataset versions as the in-memory stages, whatever the batch size or
engine, with no more than one batch of loaded documents alive at a time."""

from __future__ import annotations

import random
import shutil
import weakref
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hangjia.corpus import ingest
from hangjia.corpus.batches import documents_table, table_documents
from hangjia.corpus.chunk import chunk_documents
from hangjia.corpus.clean import CleanOptions, clean_documents
from hangjia.corpus.datasets import DatasetStore, file_hash, table_hash
from hangjia.corpus.dedup import dedup_documents
from hangjia.corpus.documents import load_documents
from hangjia.corpus.ingest import ingest_documents
from tests.paths import CORPUS_FIXTURES, KESTREL_DOCS


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_streaming_ingest_gives_what_the_in_memory_stages_give(tmp_path, engine):
    docs_dir = tmp_path / "docs"
    shutil.copytree(KESTREL_DOCS, docs_dir)
    shutil.copytree(CORPUS_FIXTURES, docs_dir, dirs_exist_ok=True)
    docs, skipped = load_documents(docs_dir)
    cleaned, filtered, report = clean_documents(docs)
    dates = {d.source: (docs_dir / d.source).stat().st_mtime for d in cleaned if (docs_dir / d.source).is_file()}
    kept, clusters = dedup_documents(cleaned, dates=dates)
    chunks = chunk_documents(kept)

    out = ingest_documents(docs_dir, tmp_path / "work", clean_options=CleanOptions(), engine=engine, batch_docs=4)
    assert table_documents(pq.read_table(out.documents)) == kept
    assert pq.read_table(out.chunks).to_pylist() == [c.to_dict() for c in chunks]
    assert out.clusters == clusters and clusters  # the sample's revA/revB manuals
    assert out.skipped == skipped and out.filtered == filtered
    assert out.cleaning == report.to_dict()
    assert (out.document_count, out.chunk_count) == (len(kept), len(chunks))
    assert sum(out.formats.values()) == len(kept)
    in_memory = DatasetStore(tmp_path / "a").save("documents", documents_table(kept))
    assert DatasetStore(tmp_path / "b").save_file("documents", out.documents).version == in_memory.version


WORDS = ["pump", "hose", "drain", "valve", "seal", "door", "rinse", "water", "heat", "fan", "motor", "code"]


def _corpus(folder: Path, n: int) -> None:
    """n markdown documents of ~80 random words; every 97th repeats the one before exactly, every 89th nearly."""
    rng = random.Random(0)
    folder.mkdir()
    previous = ""
    for i in range(n):
        content = f"# Note {i}\n\n" + " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(80))
        if i % 97 == 96:
            content = previous
        elif i % 89 == 88:
            content = previous.replace(previous.split()[40], "changed", 1)
        (folder / f"doc{i:05d}.md").write_text(content + "\n", encoding="utf-8")
        previous = content


def test_a_large_corpus_streams_one_batch_at_a_time_and_batch_size_does_not_change_versions(tmp_path, monkeypatch):
    docs_dir = tmp_path / "docs"
    _corpus(docs_dir, 2400)  # over ALL_PAIRS_BELOW, so near duplicates come from LSH bands
    stream = ingest.iter_documents

    def counted(*args, **kwargs):
        # Every loaded Document counts as live until nothing refers to it any more (its finalizer runs).
        for item in stream(*args, **kwargs):
            live[0] += 1
            most[0] = max(most[0], live[0])
            weakref.finalize(item, lambda: live.__setitem__(0, live[0] - 1))
            yield item

    monkeypatch.setattr(ingest, "iter_documents", counted)
    refs = {}
    for batch_docs in (50, 10_000):
        live, most = [0], [0]
        out = ingest_documents(
            docs_dir, tmp_path / f"work{batch_docs}", clean_options=CleanOptions(), batch_docs=batch_docs
        )
        store = DatasetStore(tmp_path / f"datasets{batch_docs}")
        documents = store.save_file("documents", out.documents)
        chunks = store.save_file("chunks", out.chunks, parents=[documents.ref])
        refs[batch_docs] = (documents.ref, chunks.ref, [asdict(c) for c in out.clusters], most[0])
        assert documents.rows == out.document_count and chunks.rows == out.chunk_count
    (docs_50, chunks_50, clusters_50, most_50), (docs_all, chunks_all, clusters_all, most_all) = refs.values()
    assert most_50 <= 51  # one batch, plus the document just yielded
    assert most_all == 2400  # the check sees it when everything is held at once
    assert (docs_50, chunks_50, clusters_50) == (docs_all, chunks_all, clusters_all)
    kinds = {c["kind"] for c in clusters_50}
    assert kinds == {"exact", "near"} and len(clusters_50) >= 40
    in_memory = pq.read_table(tmp_path / "datasets50" / "documents" / docs_50.split("@")[1] / "data.parquet")
    assert DatasetStore(tmp_path / "again").save("documents", in_memory).ref == docs_50


def test_a_parquet_file_hashes_like_the_table_however_its_rows_are_grouped(tmp_path):
    rng = random.Random(1)
    rows = [
        {
            "id": i,
            "text": None if i % 7 == 0 else "x" * rng.randrange(20),
            "spans": [{"start": i, "end": None}] * (i % 3),
        }
        for i in range(3000)
    ]
    table = pa.Table.from_pylist(rows)
    hashes = {table_hash(table)}
    for _ in range(4):
        cuts = sorted(rng.sample(range(1, 3000), 9))
        pieces = [table.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, 3000], strict=True)]
        hashes.add(table_hash(pa.concat_tables(pieces)))
        path = tmp_path / f"{cuts[0]}.parquet"
        with pq.ParquetWriter(path, table.schema) as writer:
            for piece in pieces:
                writer.write_table(piece)
        hashes.add(file_hash(path))
    assert len(hashes) == 1
    assert table_hash(table.slice(1)) not in hashes
