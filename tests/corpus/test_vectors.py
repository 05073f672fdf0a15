"""Vector stores: the in-memory numpy store and LanceDB answer alike, and survive a save/load round trip."""

import numpy as np
import pytest

from hangjia.core.errors import HangjiaError
from hangjia.corpus.vectors import STORES, load_store, new_store, unit


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)


@pytest.fixture(params=sorted(STORES))
def kind(request) -> str:
    if request.param == "lancedb":
        pytest.importorskip("lancedb")
    return request.param


def test_search_returns_exact_cosine_neighbours_best_first(kind, vectors, tmp_path):
    store = new_store(kind, tmp_path / kind)
    store.add(range(200), vectors[:200])
    store.add(range(200, 300), vectors[200:])  # added in two batches, as the index stage does
    assert len(store) == 300
    query = vectors[7] + 0.1
    cosines = unit(vectors) @ unit(query)[0]
    expected = np.argsort(-cosines)[:5]
    ids, scores = store.search(query, 5)
    assert ids.tolist() == expected.tolist()
    np.testing.assert_allclose(scores, cosines[expected], atol=1e-5)
    np.testing.assert_allclose(store.get([42, 3]), unit(vectors[[42, 3]]), atol=1e-6)
    assert store.search(query, 0)[0].size == 0


def test_both_stores_agree_and_round_trip_through_their_folder(vectors, tmp_path):
    pytest.importorskip("lancedb")
    results = {}
    for kind in STORES:
        store = new_store(kind, tmp_path / kind)
        store.add(range(300), vectors)
        store.save()
        loaded = load_store(tmp_path / kind)
        assert type(loaded) is type(store) and len(loaded) == 300
        for row in (0, 150, 299):
            ids, scores = loaded.search(vectors[row], 10)
            assert ids[0] == row and scores[0] == pytest.approx(1.0, abs=1e-5)
            before_ids, before_scores = store.search(vectors[row], 10)
            assert ids.tolist() == before_ids.tolist()
            np.testing.assert_allclose(scores, before_scores, atol=1e-6)
            results.setdefault(row, []).append(ids.tolist())
    assert all(a == b for a, b in results.values())  # memory and lancedb: the same neighbours


def test_unknown_kind_and_missing_folder_are_errors_for_people(tmp_path):
    with pytest.raises(HangjiaError, match="Unknown vector store 'faiss'"):
        new_store("faiss", tmp_path / "v")
    with pytest.raises(HangjiaError, match="No vector store"):
        load_store(tmp_path / "missing")
