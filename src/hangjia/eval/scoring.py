"""Answer scoring for short-answer questions: normalised exact match, alias containment, abstention, and the
graded overlaps token F1 (SQuAD) and ROUGE-L.

The normalisation and the abstention markers follow the sample domain's scoring rules
(examples/kestrel/README.md), so numbers here compare with any other tool that follows them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

from hangjia.core.words import CJK_RANGES, join_thousands, normalize

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
    "documents do not say",
    # Chinese: "I don't know", "(the documents) do not say / mention", "no relevant information", "cannot answer".
    "不知道",
    "没有说明",
    "未说明",
    "没有提到",
    "未提及",
    "没有提及",
    "没有相关信息",
    "无相关信息",
    "无法回答",
    "文档中没有",
    "文档没有",
)
_MARKERS = tuple(f" {normalize(m)} " for m in ABSTAIN_MARKERS)


def abstains(prediction: str) -> bool:
    """The prediction says the answer is not known or not in the documents (English or Chinese)."""
    norm = f" {normalize(prediction)} "
    return any(marker in norm for marker in _MARKERS)


def matches(prediction: str, answer: str, aliases: list[str]) -> bool:
    """Exact match after normalisation, or any reference as a whole-token substring of the prediction. A reference
    that normalises to nothing matches nothing (it would otherwise equal every prediction that does too)."""
    pred = normalize(prediction)
    refs = [ref for ref in (normalize(r) for r in [answer, *aliases]) if ref]
    return any(pred == ref or f" {ref} " in f" {pred} " for ref in refs)


def is_correct(prediction: str, answer: str, aliases: list[str], qtype: str) -> bool:
    if qtype == "unanswerable":
        return abstains(prediction)
    return matches(prediction, answer, aliases)


# Ideographs, kana and Hangul are scored one character per token: Chinese and Japanese write no spaces, so a
# whole answer would otherwise be one token and F1 would be all or nothing. CJK punctuation is not included.
# A CJK character, a decimal number ("38.50" stays whole, as in `normalize`), or a run of other letters/digits.
_TOKEN = re.compile(rf"[{CJK_RANGES}]|\d+(?:\.\d+)+|(?:(?![{CJK_RANGES}])[^\W_])+")
_ARTICLES = frozenset({"a", "an", "the"})


def tokens(text: str) -> list[str]:
    """Lower-case word tokens after NFKC; each CJK character is a token; punctuation is dropped."""
    return _TOKEN.findall(join_thousands(unicodedata.normalize("NFKC", text).lower()))


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, one row of the DP table at a time."""
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b, start=1):
            row.append(prev[j - 1] + 1 if x == y else max(prev[j], row[j - 1]))
        prev = row
    return prev[-1]


def _rouge_l(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str, aliases: Sequence[str] = ()) -> float:
    """SQuAD's token F1 (bag of tokens, articles dropped), the best over the reference and its aliases."""
    pred = [t for t in tokens(prediction) if t not in _ARTICLES]
    return max(_f1(pred, [t for t in tokens(ref) if t not in _ARTICLES]) for ref in [reference, *aliases])


def rouge_l(prediction: str, reference: str, aliases: Sequence[str] = ()) -> float:
    """ROUGE-L F-measure (longest common token subsequence, rouge-score's beta of 1), the best over the
    reference and its aliases. Tokens as `tokens`, so CJK answers score where rouge-score's tokenizer sees nothing."""
    pred = tokens(prediction)
    return max(_rouge_l(pred, tokens(ref)) for ref in [reference, *aliases])
