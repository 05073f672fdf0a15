"""BM25 retrieval over chunks (bm25s), with a tokenizer that keeps part numbers and error codes whole."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np

from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import iter_jsonl, write_jsonl
from hangjia.core.words import BM25_STOPWORDS, split_han_kana
from hangjia.corpus.chunk import Chunk

CHUNKS_FILE = "chunks.jsonl"
_PARAMS_FILE = "params.index.json"  # written by bm25s.BM25.save

# Runs of letters/digits, optionally joined by "-" or "." ("kp-2210", "hp-08m", "v2.14", "38.50").
_TOKEN = re.compile(r"[^\W_]+(?:[-.][^\W_]+)*")


def tokenize(text: str) -> list[str]:
    """Lower-case tokens; a joined code yields its parts and itself: "KP-2210" -> "kp", "2210", "kp-2210"; a run of
    Chinese (or Japanese) characters yields each character and each pair of neighbours, as Lucene's CJK bigram
    analyser does: "排水泵" -> "排", "水", "泵", "排水", "水泵". Measured on examples/lanshan
    (benchmarks/chinese_retrieval.py): recall@2 34% with the whole run as one token, 92% with bigrams, 90% with
    jieba (a 19 MB dependency that is no better here)."""
    return split_han_kana(text, word_tokens, cjk_terms)


def cjk_terms(run: str) -> list[str]:
    """A run of Chinese/Japanese characters as its characters and its bigrams."""
    return list(run) + [run[i : i + 2] for i in range(len(run) - 1)]


def word_tokens(text: str) -> list[str]:
    """Tokens of space-separated text (English and other alphabets): words and joined codes, stop words dropped."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        word = match.group()
        parts = re.split(r"[-.]", word)
        tokens.extend(_stem(p) for p in parts if p not in BM25_STOPWORDS)
        if len(parts) > 1:
            tokens.append(word)
    return tokens


def _stem(word: str) -> str:
    """Drop a plural or third-person "s" ("weighs" -> "weigh", "filters" -> "filter"); keep "ss" ("pass")."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk: `score` is what ranked it (BM25, cosine or fused), beside both signals on their own."""

    chunk: Chunk
    score: float
    bm25: float
    """The chunk's BM25 score for the query (0: no query term occurs in it)."""
    dense: float | None = None
    """Cosine of the query's and the chunk's embeddings; None when the index has no vectors (rag.retrieval: bm25)."""


def indexed_text(chunk: Chunk) -> str:
    """What is indexed for a chunk, by BM25 and the embedder alike: its file name ("heat pump troubleshooting"),
    which often names what the chunk is about, then its text."""
    return f"{Path(chunk.source).stem.replace('_', ' ')} {chunk.text}"


def top_positive(scores: np.ndarray, k: int) -> list[int]:
    """Positions of the k best positive scores, best first; ties keep their order."""
    return [int(i) for i in np.argsort(-scores, kind="stable")[: max(k, 0)] if scores[i] > 0]


class BM25Index:
    """Chunks plus a bm25s index over their text."""

    def __init__(self, chunks: list[Chunk], retriever: bm25s.BM25):
        self.chunks = chunks
        self._retriever = retriever

    @classmethod
    def build(cls, chunks: list[Chunk]) -> BM25Index:
        if not chunks:
            raise HangjiaError("There are no chunks to index; ingest a docs folder with readable files.")
        retriever = bm25s.BM25()
        corpus = [tokenize(indexed_text(c)) for c in chunks]
        retriever.index(corpus, show_progress=False)
        return cls(chunks, retriever)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._retriever.save(str(directory), show_progress=False)
        write_jsonl(directory / CHUNKS_FILE, (chunk.to_dict() for chunk in self.chunks))

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        directory = Path(directory)
        if not (directory / CHUNKS_FILE).is_file() or not (directory / _PARAMS_FILE).is_file():
            raise HangjiaError(
                f"No search index in {directory}; build it with `hangjia ingest` or check the workspace path."
            )
        chunks = [Chunk.from_dict(row) for row in iter_jsonl(directory / CHUNKS_FILE)]
        retriever = bm25s.BM25.load(str(directory), show_progress=False)
        return cls(chunks, retriever)

    def knows(self, term: str) -> bool:
        """Whether the indexed text holds a term: all its tokens are in the index's vocabulary (a stop word, which
        has no token, counts as known)."""
        return all(t in self._retriever.vocab_dict for t in tokenize(term))

    def scores(self, query: str) -> np.ndarray:
        """Every chunk's BM25 score for the query, in chunk order (all 0 when no query term is in the index)."""
        tokens = [t for t in tokenize(query) if t in self._retriever.vocab_dict]
        return self._retriever.get_scores(tokens) if tokens else np.zeros(len(self.chunks), dtype=np.float32)

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """Up to k chunks with a positive score, best first; ties keep chunk order."""
        scores = self.scores(query)
        return [Hit(self.chunks[i], float(scores[i]), float(scores[i])) for i in top_positive(scores, k)]
