"""Retrieval over the chunks in one of three modes (`rag.retrieval`): BM25, dense (embeddings in a vector store),
or hybrid (both rankings fused by reciprocal rank fusion).

The embedder reaches this layer as a plain function (texts → unit vectors); llm/retrieval.py passes
all-MiniLM-L6-v2. Dense vectors embed the very text BM25 indexes (`indexed_text`). The index folder holds BM25's
files, `retrieval.json` (the mode) and, for dense and hybrid, the vector store in `vectors/`; a hit carries its BM25
score and, when there are vectors, its cosine to the query, whatever ranked it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from hangjia.core.errors import HangjiaError
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.index import BM25Index, Hit, indexed_text, top_positive
from hangjia.corpus.vectors import VectorStore, load_store, new_store, unit

Embed = Callable[[list[str]], np.ndarray]

MODES = ("bm25", "dense", "hybrid")
RETRIEVAL_FILE = "retrieval.json"
VECTORS_DIR = "vectors"
# Cormack et al. (2009)'s constant: a document's fused score is Σ 1/(60 + rank); 60 damps the top ranks so a chunk
# ranked well by both lists beats one ranked first by a single list.
RRF_K = 60
# Each ranking is cut at this depth before fusing: at rank 50 a list adds 1/110, under a fifth of its first place.
CANDIDATES = 50


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Items of several best-first rankings by Σ 1/(k + rank) over the rankings they appear in, best first; ties
    keep the order in which the items were first seen."""
    fused: dict[Hashable, float] = defaultdict(float)
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            fused[item] += 1 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


class Retriever:
    """BM25 over the chunks, plus a vector store of their embeddings (required by dense and hybrid)."""

    def __init__(
        self,
        bm25: BM25Index,
        mode: str = "bm25",
        store: VectorStore | None = None,
        embed: Embed | None = None,
        rrf_k: int = RRF_K,
    ):
        if mode not in MODES:
            raise HangjiaError(f"Unknown retrieval mode '{mode}'; choose one of: {', '.join(MODES)}.")
        if mode != "bm25" and (store is None or embed is None):  # bm25 with vectors still reports each hit's cosine
            raise HangjiaError(f"Retrieval mode '{mode}' needs a vector store and an embedder.")
        self.bm25, self.mode, self.store, self.embed, self.rrf_k = bm25, mode, store, embed, rrf_k

    @property
    def chunks(self) -> list[Chunk]:
        return self.bm25.chunks

    @classmethod
    def build(
        cls,
        chunks: list[Chunk],
        directory: Path,
        mode: str = "bm25",
        store: str | None = None,
        embed: Embed | None = None,
        batch_size: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> Retriever:
        """Index the chunks into `directory`; with a `store` kind (which dense and hybrid need), also embed them
        `batch_size` at a time: each batch goes to the store as it comes, and `on_batch` hears its size."""
        directory = Path(directory)
        if mode not in MODES:
            raise HangjiaError(f"Unknown retrieval mode '{mode}'; choose one of: {', '.join(MODES)}.")
        bm25 = BM25Index.build(chunks)
        bm25.save(directory)
        if mode != "bm25" and store is None:
            raise HangjiaError(f"Retrieval mode '{mode}' needs a vector store; set rag.vector_store to memory.")
        vectors = None
        if store is not None:
            if embed is None:
                raise HangjiaError(f"A vector store needs an embedder to fill it (retrieval mode '{mode}').")
            vectors = new_store(store, directory / VECTORS_DIR)
            for start in range(0, len(chunks), batch_size):
                batch = chunks[start : start + batch_size]
                vectors.add(range(start, start + len(batch)), embed([indexed_text(c) for c in batch]))
                if on_batch is not None:
                    on_batch(len(batch))
            vectors.save()
        (directory / RETRIEVAL_FILE).write_text(json.dumps({"mode": mode, "rrf_k": RRF_K}), encoding="utf-8")
        return cls(bm25, mode, vectors, embed)

    @classmethod
    def load(cls, directory: Path, embed: Embed | None = None) -> Retriever:
        """The retriever saved in `directory`; an index built before retrieval modes existed is BM25."""
        directory = Path(directory)
        meta_file = directory / RETRIEVAL_FILE
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file() else {"mode": "bm25"}
        store = load_store(directory / VECTORS_DIR) if (directory / VECTORS_DIR).is_dir() else None
        return cls(BM25Index.load(directory), meta["mode"], store, embed, meta.get("rrf_k", RRF_K))

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """Up to k hits, best first: by BM25 score (bm25; chunks sharing no term with the query are left out), by
        cosine (dense), or by fused rank (hybrid: the top CANDIDATES of both). A hit's cosine is None only when there
        are no vectors (an index built for bm25)."""
        if k <= 0 or not query.strip():
            return []
        bm25 = self.bm25.scores(query)
        if self.store is None or self.embed is None:
            return [Hit(self.chunks[i], float(bm25[i]), float(bm25[i])) for i in top_positive(bm25, k)]
        query_vector = unit(self.embed([query]))[0]
        dense: dict[int, float] = {}
        if self.mode == "bm25":
            ranked = [(i, float(bm25[i])) for i in top_positive(bm25, k)]
        else:
            ids, cosines = self.store.search(query_vector, max(k, CANDIDATES))
            dense = dict(zip(ids.tolist(), cosines.tolist(), strict=True))
            if self.mode == "dense":
                ranked = list(dense.items())[:k]
            else:
                ranked = reciprocal_rank_fusion([top_positive(bm25, CANDIDATES), ids.tolist()], self.rrf_k)[:k]
        missing = [i for i, _ in ranked if i not in dense]  # not among the dense candidates: its cosine still counts
        if missing:
            dense.update(zip(missing, (self.store.get(missing) @ query_vector).tolist(), strict=True))
        return [Hit(self.chunks[i], float(score), float(bm25[i]), float(dense[i])) for i, score in ranked]
