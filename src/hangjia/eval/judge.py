"""LLM-as-judge: an OpenAI-compatible model grades each answer against the reference, yes or no.

String matching misses a right answer in other words ("the drain pump is blocked" for "drain pump
blocked") and a judge catches it; a judge also errs, so its verdict is reported beside the matched
accuracy, never instead of it. Verdicts are cached with the teacher cache (a rerun asks nothing), and a
reply that is neither yes nor no counts as not judged rather than as wrong.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hangjia.llm.teacher import Teacher

SYSTEM = (
    "You grade answers to questions about a company's documents. Compare the candidate answer with the reference "
    "answer. Reply with one word: yes if the candidate gives the same fact as the reference (other wording, extra "
    "detail that does not contradict it and a different unit notation are fine), otherwise no."
)
NO_ANSWER_REFERENCE = "The documents do not contain this; the right response says it does not know."
VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def judge_messages(question: str, reference: str, candidate: str, unanswerable: bool = False) -> list[dict[str, str]]:
    reference = NO_ANSWER_REFERENCE if unanswerable else reference
    user = f"Question: {question}\nReference answer: {reference}\nCandidate answer: {candidate or '(no answer)'}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user + "\nCorrect (yes or no)?"}]


def parse_verdict(reply: str | None) -> bool | None:
    """The first standalone yes/no in the reply; None when there is none (or no reply)."""
    match = VERDICT.search(reply or "")
    return None if match is None else match.group(1).lower() == "yes"


def judge_answers(judge: Teacher, answers: Sequence[dict[str, Any]]) -> list[bool | None]:
    """A verdict per answer row (as eval writes them: question, answer, prediction, type)."""
    conversations = [
        judge_messages(r["question"], r["answer"], r["prediction"], r.get("type") == "unanswerable") for r in answers
    ]
    replies = judge.complete(conversations, max_tokens=8, temperature=0.0)
    return [parse_verdict(reply) for reply in replies]


def summarize_verdicts(answers: Sequence[dict[str, Any]]) -> dict[tuple[str, bool], dict[str, Any]]:
    """Per (model, rag): share judged correct among judged answers, how many were judged, and matcher agreement."""
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for row in answers:
        groups[(row["model"], row["rag"])].append(row)
    out = {}
    for key, rows in groups.items():
        judged = [r for r in rows if r.get("judge") is not None]
        out[key] = {
            "judge_accuracy": sum(r["judge"] for r in judged) / len(judged) if judged else None,
            "judged": len(judged),
            "judge_agreement": sum(r["judge"] == r["correct"] for r in judged) / len(judged) if judged else None,
        }
    return out
