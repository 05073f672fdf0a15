"""What every generation backend takes and gives: prompt texts in, `Completion`s (or a stream of text deltas) out.

A backend continues raw prompt texts; the `Engine` (llm/generation.py) owns everything before that (system prompt,
retrieval, chat template) and after it (citations, the guard), so one prompt reads the same whichever backend runs
it. Backends, chosen per model version in `serve.backend`:

    transformers     llm/generation.py: the Hugging Face model the rest of Hangjia trains and evaluates
    llama.cpp        llm/llamacpp.py: the exported GGUF, many sequences decoded together in one batch per step
    openai-upstream  llm/upstream.py: any OpenAI-compatible server (vLLM, llama-server, another Hangjia)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop", "length", "abort" (cancelled) or "error"
    citations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 is greedy and deterministic."""
    top_p: float = 1.0
    seed: int | None = None
    """Seeds sampling: the same seed, prompt and settings give the same text."""
    stop: list[str] = field(default_factory=list)
    """Decoding ends once the answer (trimmed as the client sees it) contains one of these."""


@dataclass
class Control:
    """What the caller holds while one request decodes: a way to stop it, and a view of its progress."""

    cancel: threading.Event = field(default_factory=threading.Event)
    """Set it (from any thread) and decoding ends after the current step, finish reason "abort"."""
    on_step: Callable[[], None] | None = None
    """Called from the decoding thread after each step (one new token per row)."""
    steps: int = 0
    """Decoding steps done so far: the tokens generated, while the answer is still running."""


class Backend(Protocol):
    """One served model version's generator. Thread-safe: the server calls it from many threads at once."""

    parallel: int
    """Sequences it decodes together (1: one request at a time); the server admits this many requests at once."""

    def generate_texts(
        self, texts: list[str], params: GenerationParams, control: Control | None = None, *, trim: bool = False
    ) -> list[Completion]:
        """Continue each text; `trim` strips each answer (as chat answers are)."""
        ...

    def stream_text(
        self, text: str, params: GenerationParams, control: Control | None = None, *, trim: bool = False
    ) -> tuple[Iterator[str], Completion]:
        """(text deltas, a Completion whose counts are final once the deltas are exhausted) for one text."""
        ...

    def close(self) -> None:
        """Free what it holds (weights, cache, a connection); it is not called again after."""
        ...


def cut_character(text: str) -> str:
    """`text` without the replacement characters a token cap leaves where it split a character's UTF-8 bytes (a byte-
    level tokenizer spells a Chinese character in two or three tokens; stopped between them, decoding gives "�")."""
    return text.rstrip("\ufffd")
