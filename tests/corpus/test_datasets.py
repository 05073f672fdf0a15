import pyarrow as pa
import pytest

from hangjia.core.errors import HangjiaError
from hangjia.corpus.datasets import DatasetStore, diff, table_hash


def test_versions_are_content_addressed_and_immutable(tmp_path):
    store = DatasetStore(tmp_path)
    rows = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    first = store.save("chunks", rows, stage="ingest", config={"chunk_words": 120})
    assert first.version == table_hash(rows)[:12]
    # Same rows split differently into batches: the same version, nothing rewritten.
    again = store.save("chunks", pa.concat_tables([rows.slice(0, 1), rows.slice(1)]))
    assert again.version == first.version and len(store.versions("chunks")) == 1
    assert again.read().equals(rows)
    assert first.manifest["rows"] == 2 and first.manifest["code_version"].startswith("hangjia ")
    second = store.save("chunks", pa.table({"id": ["a", "c"], "text": ["x2", "z"]}), parents=["documents@1"])
    assert [v.version for v in store.versions("chunks")] == [first.version, second.version]
    assert store.get("chunks").version == second.version  # newest
    assert store.resolve(f"chunks@{first.version[:6]}").version == first.version


def test_diff_and_lineage_back_to_sources(tmp_path):
    store = DatasetStore(tmp_path)
    docs = store.save("documents", pa.table({"source": ["a.md", "b.md"], "sha256": ["1" * 64, "2" * 64]}))
    old = store.save("chunks", pa.table({"id": ["c1", "c2"], "text": ["x", "y"]}), parents=[docs.ref])
    new = store.save("chunks", pa.table({"id": ["c2", "c3"], "text": ["y!", "z"]}), parents=[docs.ref])
    assert diff(old.read(), new.read(), "id") == {"added": ["c3"], "removed": ["c1"], "changed": ["c2"]}
    pairs = store.save("pairs", pa.table({"question": ["q"]}), parents=[new.ref])
    assert [v.ref for v in store.lineage(pairs.ref)] == [pairs.ref, new.ref, docs.ref]


def test_unknown_names_and_versions_are_clear(tmp_path):
    store = DatasetStore(tmp_path)
    with pytest.raises(HangjiaError, match="No dataset named 'chunks'"):
        store.get("chunks")
    store.save("chunks", pa.table({"id": ["a"]}))
    with pytest.raises(HangjiaError, match="no single version 'zzz'"):
        store.resolve("chunks@zzz")
