"""Answer scoring for short-answer questions: normalised exact match, alias containment, abstention.

The normalisation and the abstention markers follow the sample domain's scoring rules
(examples/kestrel/README.md), so numbers here compare with any other tool that follows them.
"""

from __future__ import annotations

import re
import unicodedata

ABSTAIN_MARKERS = (
    "unanswerable",
    "not stated",
    "not mentioned",
    "no information",
    "not in the documents",
    "not in the provided",
    "cannot be answered",
    "cannot answer",
    "can t answer",
    "unknown",
    "i don t know",
    "do not know",
)


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # 1,500 -> 1500
    text = re.sub(r"[^a-z0-9.+/:]+", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep only decimal points
    return " ".join(text.split())


def abstains(prediction: str) -> bool:
    norm = normalize(prediction)
    return any(marker in norm for marker in ABSTAIN_MARKERS)


def matches(prediction: str, answer: str, aliases: list[str]) -> bool:
    """Exact match after normalisation, or any reference as a whole-token substring of the prediction."""
    pred = normalize(prediction)
    refs = [normalize(r) for r in [answer, *aliases] if normalize(r)]
    return pred == normalize(answer) or any(f" {ref} " in f" {pred} " for ref in refs)


def is_correct(prediction: str, answer: str, aliases: list[str], qtype: str) -> bool:
    if qtype == "unanswerable":
        return abstains(prediction)
    return matches(prediction, answer, aliases)
