"""When an extracted answer is acceptable: short, and grounded in its chunk (every number, most content words)."""

from __future__ import annotations

import re

from hangjia.core.words import GROUNDING_STOPWORDS

MAX_ANSWER_WORDS = 40

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"[^\W_]+")


def numbers(text: str) -> set[str]:
    return {re.sub(r",(?=\d{3}\b)", "", n) for n in _NUMBER.findall(text)}


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def is_grounded(answer: str, passage: str) -> bool:
    """Every number and >= 70% of the content words of the answer occur in the passage (case-insensitive)."""
    if not answer.strip() or not numbers(answer) <= numbers(passage):
        return False
    seen = set(tokens(passage))
    content = [w for w in tokens(answer) if len(w) > 2 and w not in GROUNDING_STOPWORDS and not w.isdigit()]
    if not content:  # "H4", "D", "12 h": numbers are checked above, the rest must appear as tokens
        return all(t in seen for t in tokens(answer))
    return sum(w in seen for w in content) >= 0.7 * len(content)


def word_count(text: str) -> int:
    return len(text.split())
