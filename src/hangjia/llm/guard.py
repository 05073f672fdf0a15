"""The answer guard: "the documents do not say" instead of an invented answer, checked before and after generation.

A small model given passages that do not hold the answer tends to answer anyway, from the passage closest to the
question. Two checks catch the common cases, each with a reason a person can read:

- before generating, `unknown_terms`: the question names something no document mentions — a code ("E77",
  "HP-16M") or a proper name ("Galloway Cross") that occurs in no chunk of the index. The documents cannot say
  anything about it, so no passage will hold the answer.
- after generating, `ungrounded`: the answer carries a number or a code that neither the retrieved passages nor the
  question contain — a value the model made up.

An abstaining answer passes as it is. Both checks use the index's own tokenizer, so "HP-16M" in a question matches
"HP-16M" in a passage exactly as retrieval does; a number matches after dropping thousands separators.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hangjia.core.citations import strip_markers
from hangjia.core.grounding import numbers
from hangjia.core.prompts import not_in_documents
from hangjia.corpus.index import BM25Index, tokenize

# A code: letters and digits in one token, optionally joined by - or . ("E77", "HP-16M", "KP-2210", "v2.14").
_CODE = re.compile(r"(?<![\w-])(?=[\w.-]*[A-Za-z])(?=[\w.-]*\d)[A-Za-z0-9]+(?:[-.][A-Za-z0-9]+)*(?![\w-])")
# A capitalised word that does not start a sentence: a name ("Galloway", "Brennvik", "Quietline").
_NAME = re.compile(r"(?<=[\w,;:)'’\"] )[A-Z][a-z]+(?:[-'][A-Za-z]+)?\b")


@dataclass(frozen=True)
class Verdict:
    """Whether an answer may be given; when not, the reason (a short code) and what triggered it."""

    passed: bool
    reason: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "reason": self.reason, "detail": self.detail}


PASS = Verdict(True)


def question_terms(question: str) -> list[str]:
    """The codes and proper names a question names, in order, each once. A code of 9 digits or more is left out:
    that is a serial or order number ("A60-2309-01234"), which documents give as a range, not by name."""
    codes = [c for c in (m.group() for m in _CODE.finditer(question)) if sum(ch.isdigit() for ch in c) < 9]
    return list(dict.fromkeys(codes + [m.group() for m in _NAME.finditer(question)]))


class AnswerGuard:
    """The two checks over one BM25 index: its vocabulary says what the documents mention."""

    def __init__(self, index: BM25Index):
        self.index = index

    def before(self, question: str) -> Verdict:
        """Fails when the question names a code or a name that no chunk contains."""
        unknown = [t for t in question_terms(question) if not self.index.knows(t)]
        if unknown:
            return Verdict(False, "unknown_terms", f"the documents never mention {', '.join(unknown)}")
        return PASS

    def after(self, question: str, answer: str, passages: Sequence[str], abstained: bool) -> Verdict:
        """Fails when the answer holds a number or a code found neither in the passages (their texts) nor in the
        question."""
        if abstained or not answer.strip():
            return PASS
        answer = strip_markers(answer)
        source = " ".join([question, *passages])
        missing = sorted(numbers(answer) - numbers(source))
        seen = set(tokenize(source))
        missing += [c for c in question_terms(answer) if _CODE.fullmatch(c) and not set(tokenize(c)) <= seen]
        if missing:
            return Verdict(False, "ungrounded", f"the passages do not contain {', '.join(dict.fromkeys(missing))}")
        return PASS

    @staticmethod
    def reply(question: str) -> str:
        """What is said instead of a blocked answer, in the question's language."""
        return not_in_documents(question)
