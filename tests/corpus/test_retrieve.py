"""Retrieval modes over a tiny corpus with a toy embedder (no model): BM25, dense, hybrid fusion, save/load."""

import numpy as np
import pytest

from hangjia.core.errors import HangjiaError
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.retrieve import RRF_K, Retriever, reciprocal_rank_fusion

# The toy embedder knows that these words mean one thing; BM25 does not.
SYNONYMS = {"guarantee": "warranty", "cost": "price", "costs": "price", "fee": "price"}
TEXTS = [
    "Error E24 means the drain pump is blocked; clean the filter.",
    "The warranty covers parts and labour for two years.",
    "The drain pump KP-2210 has a price of 38.50 EUR.",
    "Descale the kettle every month with citric acid.",
    "See the price list for every spare part.",
]
CHUNKS = [Chunk(id=f"c{i}", source=f"doc{i}.md", section="", start=0, end=len(t), text=t) for i, t in enumerate(TEXTS)]


def toy_embed(texts: list[str]) -> np.ndarray:
    """Bag of (synonym-folded) words hashed into 64 dimensions."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in text.lower().replace(";", " ").replace(".", " ").split():
            out[row, sum(map(ord, SYNONYMS.get(word, word))) % 64] += 1
    return out


def test_rrf_on_a_hand_made_ranking():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    assert dict(fused)["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert dict(fused)["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert dict(fused)["d"] == pytest.approx(1 / 63)
    # Ranked by one list only, first place loses to second place in both: agreement wins.
    assert [i for i, _ in reciprocal_rank_fusion([["x", "y"], ["z", "y"]])][0] == "y"
    assert reciprocal_rank_fusion([]) == [] and RRF_K == 60


@pytest.fixture(scope="module", params=["memory", "lancedb"])
def built(request, tmp_path_factory):
    if request.param == "lancedb":
        pytest.importorskip("lancedb")
    directory = tmp_path_factory.mktemp(request.param)
    return Retriever.build(CHUNKS, directory, "hybrid", request.param, toy_embed, batch_size=3), directory


def modes(built) -> dict[str, Retriever]:
    retriever, _ = built
    return {m: Retriever(retriever.bm25, m, retriever.store, toy_embed) for m in ("bm25", "dense", "hybrid")}


def test_each_mode_finds_the_chunk_and_reports_both_signals(built):
    for mode, retriever in modes(built).items():
        hits = retriever.search("E24 drain pump blocked", k=2)
        assert hits[0].chunk.id == "c0", mode
        assert hits[0].bm25 > 0 and 0 < hits[0].dense <= 1 + 1e-6
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
    assert modes(built)["bm25"].search("E24", 1)[0].score == modes(built)["bm25"].search("E24", 1)[0].bm25
    assert modes(built)["dense"].search("E24", 1)[0].score == modes(built)["dense"].search("E24", 1)[0].dense


def test_dense_and_hybrid_find_what_bm25_cannot(built):
    by_mode = modes(built)
    assert by_mode["bm25"].search("guarantee", k=3) == []  # no shared term
    for mode in ("dense", "hybrid"):
        hits = by_mode[mode].search("guarantee", k=3)
        assert hits[0].chunk.id == "c1" and hits[0].bm25 == 0, mode
    # "cost" is "price" to the embedder only: BM25 ranks c0, c2; dense c2, c4, c0; fused, c2 (2nd + 1st) leads.
    assert [h.chunk.id for h in by_mode["bm25"].search("pump cost", k=2)] == ["c0", "c2"]
    assert [h.chunk.id for h in by_mode["hybrid"].search("pump cost", k=3)] == ["c2", "c0", "c4"]


def test_edge_cases_and_a_reload_gives_the_same_hits(built):
    retriever, directory = built
    assert retriever.search("", 3) == [] and retriever.search("drain", 0) == []
    assert len(retriever.search("drain", 100)) == len(CHUNKS)  # dense ranks every chunk
    loaded = Retriever.load(directory, toy_embed)
    assert loaded.mode == "hybrid"
    for query in ("drain pump", "guarantee", "kettle acid"):
        assert [(h.chunk, round(h.score, 5), round(h.dense, 5)) for h in loaded.search(query, 3)] == [
            (h.chunk, round(h.score, 5), round(h.dense, 5)) for h in retriever.search(query, 3)
        ]


def test_bm25_mode_needs_no_embedder_and_bad_modes_are_errors(tmp_path):
    retriever = Retriever.build(CHUNKS, tmp_path / "bm25", "bm25")
    assert not (tmp_path / "bm25" / "vectors").exists()
    hit = Retriever.load(tmp_path / "bm25").search("kettle", 1)[0]
    assert hit.chunk.id == "c3" and hit.dense is None and hit == retriever.search("kettle", 1)[0]
    with pytest.raises(HangjiaError, match="Unknown retrieval mode 'sparse'"):
        Retriever.build(CHUNKS, tmp_path / "x", "sparse")
    with pytest.raises(HangjiaError, match="needs a vector store"):
        Retriever.build(CHUNKS, tmp_path / "y", "dense")
    with pytest.raises(HangjiaError, match="needs an embedder"):
        Retriever.build(CHUNKS, tmp_path / "z", "bm25", "memory")
