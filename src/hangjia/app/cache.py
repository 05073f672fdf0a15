"""The response cache: a finished answer to a greedy (temperature 0) request, given again to the same request.

Greedy decoding is deterministic, so the same request to the same weights over the same index gets the same
answer; a hit answers in a millisecond without an admission slot or a decoding step. The key is the sha256 of a
canonical JSON of everything the answer depends on:

    endpoint, model name   chat or text completion, and which served name
    model version          the Engine object (a reloaded engine is a new one) and its folders for the name: the base
                           folder, plus the adapter or tuned folder, each as path + name/size/mtime_ns of its files;
                           a backend by the files it was built from (llama.cpp's GGUF). A backend with no files (an
                           upstream server, whose weights can change unseen) is never cached.
    the request            messages or prompts, rag on/off, guard on/off, max_tokens, stop, n, seed, top_p
    index version          with rag: the index's kind, mode and top-k and a digest of its chunks (ids, spans, texts),
                           so an index rebuilt into different chunks misses, and one rebuilt into the same does not

A change of any of these misses; the old entries are never asked for again and age out of the LRU. Only answers
whose every choice finished (stop or length, not abort or error) are kept. `serve.cache_size` entries at most;
0 turns the cache off (no lookups, nothing counted).

Metrics: `hangjia:response_cache_queries_total` and `_hits_total` per model name (cacheable requests only) and the
`hangjia:response_cache_entries` gauge. A hit is a `request_success_total{finished_reason="cached"}`, in no token
counter (nothing was read or generated) and no latency histogram; its `usage` is what the answer cost when generated.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from hangjia.app.metrics import Metrics
from hangjia.app.schemas import GuardVerdict, Usage
from hangjia.llm.generation import Engine
from hangjia.llm.weights import ModelWeights

FINISHED = ("stop", "length")


@dataclass(frozen=True)
class Answer:
    """One choice as generated: its text as sent (before a blocking guard's reply replaces it), why it ended, and
    the guard's verdict when the guard ran."""

    text: str
    finish_reason: str
    guard: GuardVerdict | None = None


@dataclass(frozen=True)
class Entry:
    """What rebuilds a response (a fresh id and time each time): the answers, the usage they cost when generated,
    the retrieved passages (None without RAG; `cited` is marked again from the answers) and the notes."""

    model: str
    answers: tuple[Answer, ...]
    usage: Usage
    citations: list[dict[str, Any]] | None = None
    notes: list[str] | None = None


class ResponseCache:
    """A thread-safe LRU of entries, counted in `metrics` (queries, hits, entries per model name)."""

    def __init__(self, size: int, metrics: Metrics):
        self.size, self.metrics = size, metrics
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._engines: WeakKeyDictionary[Engine, int] = WeakKeyDictionary()
        self._numbers = itertools.count()
        self._indexes: WeakKeyDictionary[Any, tuple[int, int, str]] = WeakKeyDictionary()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def key(
        self, engine: Engine, weights: ModelWeights, endpoint: str, request: dict[str, Any], rag: bool = False
    ) -> str | None:
        """The key of a request (`request`: its fields that shape the answer), or None when it cannot be cached.
        Stats the model's files and, the first time an index is seen, hashes its chunks: call it off the loop."""
        model = self._model_version(engine, weights)
        if model is None:
            return None
        index = self._index_version(engine) if rag else None
        payload = {"endpoint": endpoint, "model": weights.name, "version": model, "rag": rag, "index": index, **request}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str, model: str) -> Entry | None:
        """The entry for `key` (now the most recently used), or None; counts the query and the hit."""
        self.metrics.cache_queries.labels(model).inc()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None:
            self.metrics.cache_hits.labels(model).inc()
        return entry

    def put(self, key: str | None, entry: Entry) -> None:
        """Keep `entry` under `key` (None: an uncacheable request, nothing kept) when every answer in it finished; the
        least recently used entry goes when full."""
        if key is None or not self.enabled or not all(a.finish_reason in FINISHED for a in entry.answers):
            return
        with self._lock:
            if key not in self._entries:
                self.metrics.cache_entries.labels(entry.model).inc()
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                _, old = self._entries.popitem(last=False)
                self.metrics.cache_entries.labels(old.model).dec()

    def __len__(self) -> int:
        return len(self._entries)

    def _model_version(self, engine: Engine, weights: ModelWeights) -> list[Any] | None:
        with self._lock:
            number = self._engines.setdefault(engine, next(self._numbers))
        backend = engine.backends.get(weights.name)
        if backend is None:
            folders = [weights.base_dir, weights.tuned]
        else:  # the engine still writes the prompt, with its base folder's chat template
            files = [v for v in getattr(backend, "__dict__", {}).values() if isinstance(v, Path)]
            if not files:
                return None
            folders = [weights.base_dir, type(backend).__name__, *files]
        return [number, *(_stamp(f) if isinstance(f, Path) else f for f in folders if f is not None)]

    def _index_version(self, engine: Engine) -> list[Any] | None:
        index = engine.index
        if index is None:
            return None
        chunks = index.chunks
        seen = self._indexes.get(index)
        if seen is None or seen[:2] != (id(chunks), len(chunks)):
            digest = hashlib.sha256()
            for c in chunks:
                digest.update(f"{c.id}\0{c.source}\0{c.section}\0{c.page}\0{c.start}\0{c.end}\0{c.text}\n".encode())
            seen = (id(chunks), len(chunks), digest.hexdigest())
            self._indexes[index] = seen
        return [type(index).__name__, getattr(index, "mode", None), engine.rag_top_k, seen[2]]


def _stamp(path: Path) -> list[Any]:
    """A folder (or file) as its path and each file's name, size and mtime_ns: a rewrite changes it."""
    if not path.exists():
        return [str(path)]
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")) if path.is_dir() else [path]
    return [str(path.resolve()), *([p.name, s.st_size, s.st_mtime_ns] for p in files for s in [p.stat()])]
