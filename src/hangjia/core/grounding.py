"""When an extracted answer is acceptable: short, and grounded in its chunk (every number, most content words)."""

from __future__ import annotations

import re

from hangjia.core.words import GROUNDING_STOPWORDS, HAN_KANA_RUN, split_han_kana

MAX_ANSWER_WORDS = 40

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_TOKEN = re.compile(r"[^\W_]+")


def numbers(text: str) -> set[str]:
    return {re.sub(r",(?=\d{3}\b)", "", n) for n in _NUMBER.findall(text)}


def tokens(text: str) -> list[str]:
    """Lower-case words; a run of Chinese (or Japanese) characters, which has no spaces to split on, as its
    overlapping character pairs ("排水泵" -> "排水", "水泵"; a lone character stays itself)."""
    return split_han_kana(text.lower(), _TOKEN.findall, _pairs)


def _pairs(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def _is_content(word: str) -> bool:
    if HAN_KANA_RUN.fullmatch(word):
        return True  # a character pair carries meaning as an English word of three letters does
    return len(word) > 2 and word not in GROUNDING_STOPWORDS and not word.isdigit()


def is_grounded(answer: str, passage: str) -> bool:
    """Every number and >= 70% of the content words of the answer occur in the passage (case-insensitive)."""
    if not answer.strip() or not numbers(answer) <= numbers(passage):
        return False
    seen = set(tokens(passage))
    content = [w for w in tokens(answer) if _is_content(w)]
    if not content:  # "H4", "D", "12 h": numbers are checked above, the rest must appear as tokens
        return all(t in seen for t in tokens(answer))
    return sum(w in seen for w in content) >= 0.7 * len(content)


def word_count(text: str) -> int:
    """Words of an answer; each Chinese or Japanese character counts as one (those scripts put no spaces)."""
    cjk = sum(len(run) for run in HAN_KANA_RUN.findall(text))
    return len(HAN_KANA_RUN.sub(" ", text).split()) + cjk
