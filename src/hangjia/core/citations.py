"""Which numbered passages an answer cites: the `[n]` markers `prompts.with_context` numbers passages with.

Retrieval-aware training teaches answers like "drain pump blocked [2]"; models also write `[1][2]`, `[1, 2]`,
`[1-3]` and, in Chinese, full-width brackets and commas: `【1】`, `［1，2］`, `[1、2]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_ITEM = r"\d+(?:\s*[-–~～]\s*\d+)?"  # a number or a range: 2, 1-3
_MARKER = re.compile(rf"[\[【［]\s*({_ITEM}(?:\s*[,，、;；]\s*{_ITEM})*)\s*[\]】］]")
_ITEM_RE = re.compile(r"(\d+)(?:\s*[-–~～]\s*(\d+))?")
_MAX_RANGE = 50  # "[1-2000]" is not a citation of 2,000 passages; no prompt holds more than a few dozen


def cited_numbers(answer: str, passages: int) -> list[int]:
    """The passage numbers (1..`passages`) that `answer` cites, ascending; numbers outside that range
    ("[2024]", "[0]") are not citations and are ignored."""
    found: set[int] = set()
    for marker in _MARKER.finditer(answer):
        for item in _ITEM_RE.finditer(marker.group(1)):
            first = int(item.group(1))
            last = int(item.group(2)) if item.group(2) else first
            if first <= last <= first + _MAX_RANGE:
                found.update(range(first, last + 1))
    return sorted(n for n in found if 1 <= n <= passages)


def strip_markers(answer: str) -> str:
    """The answer without its passage markers ("[2]", "[1, 2]", "【1】"): numbers, but not values of the answer."""
    return _MARKER.sub("", answer).replace("  ", " ").strip()


def mark_cited(citations: Iterable[dict[str, Any]], answers: Iterable[str]) -> list[dict[str, Any]]:
    """Copies of the citation records (each with its prompt number under "index") with "cited" set: whether any
    of `answers` cites it."""
    citations = list(citations)
    cited = {n for answer in answers for n in cited_numbers(answer, len(citations))}
    return [{**c, "cited": c["index"] in cited} for c in citations]
