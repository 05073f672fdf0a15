"""The prompt shapes shared by training, evaluation, chat and the server.

Training and inference must see the same system prompt and the same context layout, or the
tuned model is evaluated on a format it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# Short on purpose: every training example and every request carries it, and on a 2-core CPU each
# token of prompt costs training time (~40 ms per 8-example step per token for SmolLM2-135M).
SYSTEM_PROMPT = 'Answer briefly. If you do not know, say "I don\'t know".'


class Passage(Protocol):
    source: str
    text: str


def question_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def with_context(question: str, passages: Sequence[Passage]) -> str:
    """The user turn when RAG is on: numbered passages with their source, then the question."""
    if not passages:
        return question
    blocks = [f"[{i}] ({p.source}) {p.text.strip()}" for i, p in enumerate(passages, start=1)]
    return "Context:\n" + "\n\n".join(blocks) + f"\n\nQuestion: {question}"


def ensure_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Prepend the shared system prompt unless the caller brought their own."""
    if messages and messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": SYSTEM_PROMPT}, *messages]
