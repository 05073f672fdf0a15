"""Teachers: the LLMs that write instruction data: the embedded model, a local HF model, an OpenAI-compatible API.

Every generator talks to a `Teacher`: conversations in, one reply (or None) out per conversation, in order. The two
backends, `EndpointTeacher` and `LocalTeacher`, also report tokens per reply (`generate`), which `CachedTeacher`
needs for what a run may cost: it keeps every reply in SQLite, so a rerun sends nothing and spends nothing, and stops
sending once a token budget is spent. `make_teacher` builds the cached teacher from the teacher config's fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from hangjia.core.errors import HangjiaError

Messages = list[dict[str, str]]
TEACHER_KINDS = ("embedded", "local", "endpoint")


class Teacher(Protocol):
    name: str

    def complete(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[str | None]:
        """One reply per conversation, in order; None where a request failed after retries or the budget ran out."""
        ...


@dataclass(frozen=True)
class Completion:
    """One reply with the tokens it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    """A teacher that also says what each reply cost; what `CachedTeacher` wraps."""

    name: str
    parallelism: int
    """Requests worth sending at once (an endpoint's concurrency, a local model's batch size)."""

    def generate(
        self, conversations: Sequence[Messages], *, max_tokens: int, temperature: float, seed: int
    ) -> list[Completion | None]: ...

    def count_tokens(self, messages: Messages) -> int: ...


def _texts(replies: list[Completion | None]) -> list[str | None]:
    return [r.text if r is not None else None for r in replies]


class EndpointTeacher:
    """Any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp server, a hosted API)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 3,
        timeout_s: float = 60,
    ):
        from openai import OpenAI

        # The client itself retries 429, 5xx, timeouts and dropped connections with exponential backoff (0.5 s
        # doubling to 8 s, or the server's Retry-After); what still fails after max_retries comes back as None.
        # Local servers take any key, hence "EMPTY" when the variable is unset.
        self.client = OpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",
            max_retries=max_retries,
            timeout=timeout_s,
        )
        self.model = model
        self.name = f"endpoint:{model}"  # not the URL: moving the server to another host keeps the cache valid
        self.parallelism = concurrency
        self.failures = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def complete(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[str | None]:
        return _texts(self.generate(conversations, max_tokens=max_tokens, temperature=temperature, seed=seed))

    def generate(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[Completion | None]:
        def one(messages: Messages) -> Completion | None:
            return self._request(messages, max_tokens, temperature, seed)

        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            return list(pool.map(one, conversations))  # map keeps the input order

    def _request(self, messages: Messages, max_tokens: int, temperature: float, seed: int) -> Completion | None:
        import openai

        try:
            # max_tokens, not max_completion_tokens: every OpenAI-compatible server (vLLM, llama.cpp) reads it.
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, temperature=temperature, seed=seed
            )
            text = response.choices[0].message.content if response.choices else None
            if text is None:
                raise openai.OpenAIError("the reply had no text (a refusal or a tool call)")
        except openai.OpenAIError as e:
            with self._lock:
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"
            return None
        usage = response.usage
        if usage is None:  # some servers leave usage out; estimate so a budget still holds
            return Completion(text, self.count_tokens(messages), _estimate_tokens(text))
        return Completion(text, usage.prompt_tokens or 0, usage.completion_tokens or 0)

    def count_tokens(self, messages: Messages) -> int:
        """An estimate: the endpoint's tokenizer is not at hand."""
        return sum(_estimate_tokens(m["content"]) + 4 for m in messages) + 3  # ~4 tokens of chat markup per turn


def _estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1  # ~4 characters per token for English BPE vocabularies


class LocalTeacher:
    """A Hugging Face causal LM folder, run in this process: batched, left-padded `generate` on its chat template."""

    def __init__(self, model_dir: Path, batch_size: int = 8, name: str | None = None):
        self.model_dir = Path(model_dir)
        self.name = name or f"local:{self.model_dir.resolve()}"
        self.parallelism = batch_size
        self._lock = threading.Lock()  # one generate at a time: the model is shared and seeding is process-wide

    @cached_property
    def tokenizer(self):
        from hangjia.llm.models import load_tokenizer

        tokenizer = load_tokenizer(self.model_dir)
        tokenizer.padding_side = "left"  # a batch's prompts must all end where generation starts
        return tokenizer

    @cached_property
    def model(self):
        from hangjia.llm.models import load_causal_lm

        return load_causal_lm(self.model_dir)

    def _prompt(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_tokens(self, messages: Messages) -> int:
        return len(self.tokenizer(self._prompt(messages), add_special_tokens=False).input_ids)

    def complete(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[str | None]:
        return _texts(self.generate(conversations, max_tokens=max_tokens, temperature=temperature, seed=seed))

    def generate(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[Completion | None]:
        import torch

        out: list[Completion | None] = []
        # fork_rng: sampling is seeded without moving the caller's global torch RNG.
        with self._lock, torch.random.fork_rng(), torch.inference_mode():
            torch.manual_seed(seed)
            for i in range(0, len(conversations), self.parallelism):
                out.extend(self._batch(conversations[i : i + self.parallelism], max_tokens, temperature))
        return out

    def _batch(self, conversations: Sequence[Messages], max_tokens: int, temperature: float) -> list[Completion]:
        tok = self.tokenizer
        enc = tok([self._prompt(m) for m in conversations], return_tensors="pt", padding=True, add_special_tokens=False)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        ids = self.model.generate(**enc, max_new_tokens=max_tokens, pad_token_id=tok.pad_token_id, **sampling)
        new = ids[:, enc.input_ids.shape[1] :]
        replies = []
        for row, prompt_len in zip(new.tolist(), enc.attention_mask.sum(dim=1).tolist(), strict=True):
            if tok.eos_token_id in row:  # what follows the first end-of-turn is padding
                row = row[: row.index(tok.eos_token_id) + 1]
            text = tok.decode(row, skip_special_tokens=True).strip()
            replies.append(Completion(text, prompt_len, len(row)))
        return replies


@dataclass
class TeacherStats:
    """What a cached teacher did, for run reports."""

    requests: int = 0
    """Conversations asked for, cached or not."""
    cache_hits: int = 0
    """Answered from the cache: not sent, no tokens spent."""
    sent: int = 0
    """Sent to the teacher (duplicates within one call count once)."""
    failures: int = 0
    """Sent but no reply after retries."""
    skipped: int = 0
    """Not sent because the token budget was spent."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    """(prompt + completion tokens) / 1000 × price per 1k tokens."""
    budget_exhausted: bool = False
    last_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Estimate:
    """A dry run: what `complete` would send, at most."""

    requests: int
    cache_hits: int
    prompt_tokens: int
    """Estimated prompt tokens of the requests that would be sent."""
    max_completion_tokens: int
    cost: float
    """Upper bound: every sent request writing max_tokens."""

    def to_dict(self) -> dict:
        return asdict(self)


class CachedTeacher:
    """A backend behind an SQLite reply cache and a token budget. Safe to call from several threads."""

    def __init__(
        self, inner: Backend, cache_path: Path, budget_tokens: int | None = None, price_per_1k_tokens: float = 0.0
    ):
        self.inner = inner
        self.name = inner.name
        self.cache_path = Path(cache_path)
        self.budget_tokens = budget_tokens
        self.price_per_1k_tokens = price_per_1k_tokens
        self.stats = TeacherStats()
        self._lock = threading.Lock()
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._db()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS replies "
                "(key TEXT PRIMARY KEY, reply TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER)"
            )

    @property
    def budget_exhausted(self) -> bool:
        return self.stats.budget_exhausted

    def _db(self) -> sqlite3.Connection:
        # One short-lived connection per use: sqlite3 connections must not be shared between threads.
        return sqlite3.connect(self.cache_path, timeout=60)

    def key(self, messages: Messages, max_tokens: int, temperature: float, seed: int) -> str:
        args = [self.name, messages, int(max_tokens), float(temperature), int(seed)]  # temperature 0 and 0.0 alike
        blob = json.dumps(args, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _lookup(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with closing(self._db()) as db:
            for i in range(0, len(keys), 500):  # SQLite caps the number of ? in one statement
                part = keys[i : i + 500]
                rows = db.execute(f"SELECT key, reply FROM replies WHERE key IN ({','.join('?' * len(part))})", part)
                found.update(rows.fetchall())
        return found

    def complete(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[str | None]:
        keys = [self.key(m, max_tokens, temperature, seed) for m in conversations]
        replies: dict[str, str | None] = dict(self._lookup(keys))
        misses = {k: m for k, m in zip(keys, conversations, strict=True) if k not in replies}  # unique, in order
        with self._lock:
            self.stats.requests += len(keys)
            self.stats.cache_hits += len(keys) - sum(k in misses for k in keys)
        pending = list(misses.items())
        # Send in waves of the backend's parallelism and check the budget between waves: a run overshoots its
        # budget by at most one wave, and a crash loses at most one wave of replies.
        for i in range(0, len(pending), self.inner.parallelism):
            wave = pending[i : i + self.inner.parallelism]
            with self._lock:
                if self.stats.budget_exhausted:
                    self.stats.skipped += len(pending) - i
                    break
            got = self.inner.generate([m for _, m in wave], max_tokens=max_tokens, temperature=temperature, seed=seed)
            self._record(wave, got)
            replies.update((k, r.text if r is not None else None) for (k, _), r in zip(wave, got, strict=True))
        return [replies.get(k) for k in keys]

    def _record(self, wave: list[tuple[str, Messages]], got: list[Completion | None]) -> None:
        rows = [(k, r.text, r.prompt_tokens, r.completion_tokens) for (k, _), r in zip(wave, got, strict=True) if r]
        with closing(self._db()) as db, db:
            db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?)", rows)
        with self._lock:
            s = self.stats
            s.sent += len(wave)
            s.failures += len(wave) - len(rows)
            s.prompt_tokens += sum(r[2] for r in rows)
            s.completion_tokens += sum(r[3] for r in rows)
            s.cost = (s.prompt_tokens + s.completion_tokens) / 1000 * self.price_per_1k_tokens
            s.last_error = getattr(self.inner, "last_error", None)
            if self.budget_tokens is not None and s.prompt_tokens + s.completion_tokens >= self.budget_tokens:
                s.budget_exhausted = True

    def estimate(
        self, conversations: Sequence[Messages], max_tokens: int = 256, *, temperature: float = 0.7, seed: int = 0
    ) -> Estimate:
        """What `complete` with these arguments would send, without sending anything."""
        keys = [self.key(m, max_tokens, temperature, seed) for m in conversations]
        hits = self._lookup(keys)
        misses = {k: m for k, m in zip(keys, conversations, strict=True) if k not in hits}
        prompt = sum(self.inner.count_tokens(m) for m in misses.values())
        completion = len(misses) * max_tokens
        cost = (prompt + completion) / 1000 * self.price_per_1k_tokens
        return Estimate(len(keys), len(keys) - sum(k in misses for k in keys), prompt, completion, cost)


def make_teacher(
    kind: str,
    *,
    cache_path: Path,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 4,
    max_retries: int = 3,
    timeout_s: float = 60,
    budget_tokens: int | None = None,
    price_per_1k_tokens: float = 0.0,
    batch_size: int = 8,
) -> CachedTeacher:
    """The cached teacher for the `teacher:` config section's fields."""
    from hangjia.core.config import EMBEDDED_BASE
    from hangjia.llm.models import EMBEDDED_NAME, resolve_base

    inner: Backend
    if kind == "embedded":
        inner = LocalTeacher(resolve_base(EMBEDDED_BASE), batch_size, name=f"local:{EMBEDDED_NAME}")
    elif kind == "local":
        if not model:
            raise HangjiaError("teacher.kind is 'local' but teacher.model is not set; set it to a model folder.")
        inner = LocalTeacher(resolve_base(model), batch_size)
    elif kind == "endpoint":
        if not model or not base_url:
            raise HangjiaError(
                "teacher.kind is 'endpoint' but teacher.model or teacher.base_url is not set; set both, e.g. "
                "base_url: http://127.0.0.1:8000/v1 and the model name the server lists at /v1/models."
            )
        inner = EndpointTeacher(base_url, model, api_key_env, concurrency, max_retries, timeout_s)
    else:
        raise HangjiaError(f"Unknown teacher kind {kind!r}; use one of {', '.join(TEACHER_KINDS)}.")
    return CachedTeacher(inner, cache_path, budget_tokens, price_per_1k_tokens)
