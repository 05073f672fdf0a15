"""Retrieval with its embedder: corpus/retrieve.py's Retriever, embedding with all-MiniLM-L6-v2.

The embedder is loaded on the first text it embeds, so a BM25 index (or a server that never retrieves) never
loads it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hangjia.corpus.chunk import Chunk
from hangjia.corpus.retrieve import Embed, Retriever
from hangjia.llm.models import load_embedder


def embed_function(batch_size: int = 32) -> Embed:
    """Texts → 384-d unit vectors (float32) from the embedded all-MiniLM-L6-v2, loaded on first use."""
    model, lock = None, threading.Lock()

    def embed(texts: list[str]) -> np.ndarray:
        nonlocal model
        with lock:
            model = model or load_embedder()
        return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=batch_size)

    return embed


def build_retriever(
    chunks: list[Chunk],
    directory: Path,
    mode: str,
    store: str | None = "memory",
    on_batch: Callable[[int], None] | None = None,
) -> Retriever:
    """Index the chunks into `directory` in this mode (corpus.retrieve.MODES), embedding them into a `store` of that
    kind (corpus.vectors.STORES; None: no vectors, bm25 only)."""
    return Retriever.build(chunks, directory, mode, store, embed_function(), on_batch=on_batch)


def load_retriever(directory: Path) -> Retriever:
    """The retriever the index stage saved in `directory`, in the mode it was built with."""
    return Retriever.load(directory, embed_function())
