"""Retrieval with the real embedded all-MiniLM-L6-v2 on a tiny corpus: dense finds a paraphrase BM25 cannot."""

import pytest

from hangjia.corpus.chunk import Chunk
from hangjia.llm.retrieval import build_retriever, embed_function, load_retriever

TEXTS = {
    "warranty.md": "The warranty covers parts and labour for two years from the date of purchase.",
    "dishwasher_error_codes.md": "Error E24 means the drain is blocked; clean the filter and restart the DW4500.",
    "heat_pump.md": "If the heat pump ices up, run a manual defrost from the service menu.",
}
CHUNKS = [
    Chunk(id=f"c{i}", source=s, section="", start=0, end=len(t), text=t) for i, (s, t) in enumerate(TEXTS.items())
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("index")
    batches = []
    build_retriever(CHUNKS, directory, "hybrid", on_batch=batches.append)
    assert batches == [3]
    return directory


def test_embeddings_are_unit_vectors_of_384_dimensions():
    vectors = embed_function()(["drain pump", "排水泵"])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1) < 1e-5


def test_dense_and_hybrid_find_a_paraphrase_bm25_cannot(index_dir):
    retriever = load_retriever(index_dir)
    assert retriever.mode == "hybrid"
    query = "How long is the guarantee valid?"  # no word in common with the warranty chunk but "the"
    for mode in ("dense", "hybrid"):
        retriever.mode = mode
        hits = retriever.search(query, k=3)
        assert hits[0].chunk.source == "warranty.md", mode
        assert hits[0].bm25 == 0 and hits[0].dense > 0.4
        assert all(h.dense < hits[0].dense for h in hits[1:])
    retriever.mode = "bm25"
    assert retriever.search(query, k=3) == []


def test_hybrid_keeps_the_exact_code_match_first(index_dir):
    hits = load_retriever(index_dir).search("E24", k=3)
    assert hits[0].chunk.source == "dishwasher_error_codes.md"
    assert hits[0].bm25 > 0 and hits[0].dense is not None
