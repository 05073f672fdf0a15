"""The index stage: builds per rag.retrieval and rag.vector_store, re-runs when either changes, loads back."""

import pytest
from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace
from hangjia.corpus.retrieve import RETRIEVAL_FILE, VECTORS_DIR
from hangjia.llm.retrieval import load_retriever
from hangjia.stages.index import index, searcher
from hangjia.stages.ingest import ingest
from tests.paths import KESTREL


def test_index_stage_builds_each_mode_and_reloads(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "dishwasher_error_codes.md").write_bytes((KESTREL / "docs" / "dishwasher_error_codes.md").read_bytes())
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(tiny_model_dir)
    cfg.rag.retrieval = "hybrid"
    ws, console = Workspace(tmp_path / "ws"), Console(quiet=True)
    ingest(ws, cfg, console)

    assert not index(ws, cfg, console)["skipped"]
    folder = ws.stage_dir("index")
    assert (folder / RETRIEVAL_FILE).is_file() and (folder / VECTORS_DIR / "vectors.npy").is_file()
    assert ws.manifest("index")["config"] == {"retrieval": "hybrid", "vector_store": "memory"}
    hits = load_retriever(folder).search("What does error E24 mean?", k=2)
    assert hits[0].chunk.source == "dishwasher_error_codes.md" and hits[0].dense is not None
    assert [c.id for c in searcher(ws)("What does error E24 mean?", 2)] == [h.chunk.id for h in hits]
    assert index(ws, cfg, console)["skipped"]

    cfg.rag.retrieval = "bm25"  # a changed mode re-runs the stage; bm25 embeds nothing
    assert not index(ws, cfg, console)["skipped"]
    assert not (folder / VECTORS_DIR).exists() and ws.manifest("index")["config"]["retrieval"] == "bm25"
    bm25 = load_retriever(folder).search("What does error E24 mean?", k=1)[0]
    assert bm25.chunk.id == hits[0].chunk.id and bm25.dense is None and bm25.score == bm25.bm25

    cfg.rag.retrieval, cfg.rag.vector_store = "hybrid", "none"  # nothing embedded: hybrid cannot run
    with pytest.raises(HangjiaError, match="needs a vector store"):
        index(ws, cfg, console)
    cfg.rag.vector_store = "memory"
    assert ws.manifest("index")["config"]["retrieval"] == "bm25"  # the failed run left the last index in place
