"""Teachers: the LLMs that write instruction data (the embedded model, a local HF model, or an OpenAI-compatible endpoint).

INTERFACE (implementation in progress): every generator talks to a `Teacher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Messages = list[dict[str, str]]


class Teacher(Protocol):
    name: str

    def complete(
        self, conversations: Sequence[Messages], *, max_tokens: int = 256, temperature: float = 0.7, seed: int = 0
    ) -> list[str | None]:
        """One reply per conversation, in order; None where a request failed after retries or the budget ran out."""
        ...
