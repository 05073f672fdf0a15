"""Domain QA evaluation: every model × RAG off/on over a questions.jsonl, scored per question type.

Each answer is scored by exact/alias match (`accuracy`) and by the graded overlaps token F1 and ROUGE-L. As in
SQuAD 2.0, an unanswerable question scores F1 and ROUGE-L 1 when the model abstains and 0 otherwise, so the means
cover every question; `refusal_accuracy` and `answerable_accuracy` split accuracy by whether an answer exists.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangjia.core.errors import HangjiaError
from hangjia.eval.scoring import abstains, is_correct, rouge_l, token_f1
from hangjia.llm.generation import Engine, GenerationParams

if TYPE_CHECKING:
    from hangjia.llm.guard import AnswerGuard


@dataclass
class Question:
    id: str
    question: str
    answer: str
    type: str = "lookup"
    aliases: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)


def load_questions(path: Path, limit: int | None = None) -> list[Question]:
    if not path.is_file():
        raise HangjiaError(f"Questions file {path} does not exist; set eval.questions or pass --questions.")
    questions = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            questions.append(
                Question(
                    id=str(row.get("id", f"q{lineno}")),
                    question=row["question"],
                    answer=row["answer"],
                    type=row.get("type", "lookup"),
                    aliases=list(row.get("aliases", [])),
                    source=list(row.get("source", [])),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise HangjiaError(
                f"{path}:{lineno} is not a question record ({exc}); each line needs 'question' and 'answer'."
            ) from None
    if not questions:
        raise HangjiaError(f"Questions file {path} has no questions.")
    return questions[:limit] if limit else questions


def conditions(engine: Engine) -> list[tuple[str, bool]]:
    """(model, rag) pairs to evaluate: every model, with RAG off and, when an index exists, on."""
    rags = [False, True] if engine.index is not None else [False]
    return [(name, rag) for name in engine.model_names for rag in rags]


def evaluate(
    engine: Engine,
    questions: list[Question],
    max_new_tokens: int,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
    guard: AnswerGuard | None = None,
    only: list[tuple[str, bool]] | None = None,
) -> dict[str, Any]:
    """Greedy answers for every condition (or `only` these (model, rag) pairs), scored; `on_batch(n)` reports n
    questions done.

    With a `guard`, every RAG answer goes through it as it would in the server: a blocked answer is replaced by the
    guard's reply and the row keeps the model's own text (`raw_prediction`) and the reason. Each RAG condition's
    summary then also carries `unguarded`: the same metrics on the raw answers, so one run shows what the guard did.
    """
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    summaries, answers = [], []
    for name, rag in only or conditions(engine):
        prepared = [engine.prepare([{"role": "user", "content": q.question}], rag) for q in questions]
        # Similar prompt lengths in one batch waste less compute on left padding.
        order = sorted(range(len(questions)), key=lambda i: len(prepared[i][0][-1]["content"]))
        predictions: dict[int, str] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            outs = engine.generate_batch([prepared[i][0] for i in idx], name, params)
            predictions.update({i: out.text for i, out in zip(idx, outs, strict=True)})
            if on_batch:
                on_batch(len(idx))
        rows = [_row(q, name, rag, predictions[i], prepared[i][1]) for i, q in enumerate(questions)]
        summary = summarize(name, rag, rows)
        if rag and guard is not None:
            by_id = {c.id: c for c in engine.index.chunks}
            guarded = [
                _guarded(row, q, guard, [by_id[c["chunk_id"]].text for c in prepared[i][1]], prepared[i][1])
                for i, (row, q) in enumerate(zip(rows, questions, strict=True))
            ]
            raw = summary
            summary = summarize(name, rag, guarded)
            summary["unguarded"] = {k: raw[k] for k in _GUARD_COMPARED}
            summary["guard_blocked"] = dict(sorted(Counter(r["guard"] for r in guarded if r["guard"]).items()))
            rows = guarded
        summaries.append(summary)
        answers.extend(rows)
    return {"conditions": summaries, "answers": answers, "questions": [asdict(q) for q in questions]}


_GUARD_COMPARED = ("accuracy", "answerable_accuracy", "refusal_accuracy", "false_abstentions", "by_type")


def _row(q: Question, model: str, rag: bool, prediction: str, citations: list[dict[str, Any]]) -> dict[str, Any]:
    correct = is_correct(prediction, q.answer, q.aliases, q.type)
    return {
        "id": q.id,
        "type": q.type,
        "model": model,
        "rag": rag,
        "question": q.question,
        "answer": q.answer,
        "prediction": prediction,
        "correct": correct,
        "abstained": abstains(prediction),
        **overlap_scores(prediction, q, correct),
        "sources": [c["source"] for c in citations],
    }


def _guarded(
    row: dict[str, Any], q: Question, guard: AnswerGuard, passages: list[str], citations: list[dict[str, Any]]
) -> dict[str, Any]:
    """The row as the guard leaves it: its prediction replaced by the guard's reply when blocked."""
    verdict = guard.before(q.question)
    if verdict.passed:
        verdict = guard.after(q.question, row["prediction"], passages, row["abstained"])
    if verdict.passed:
        return {**row, "raw_prediction": row["prediction"], "guard": None}
    out = _row(q, row["model"], row["rag"], guard.reply(q.question), citations)
    return {**out, "raw_prediction": row["prediction"], "guard": verdict.reason, "guard_detail": verdict.detail}


def overlap_scores(prediction: str, q: Question, correct: bool) -> dict[str, float]:
    """Token F1 and ROUGE-L against the answer and its aliases; for an unanswerable question, 1 if the model
    abstained (`correct`) and 0 if not, since its reference ("unanswerable") is a label, not a text to overlap."""
    if q.type == "unanswerable":
        return {"f1": float(correct), "rouge_l": float(correct)}
    return {
        "f1": round(token_f1(prediction, q.answer, q.aliases), 4),
        "rouge_l": round(rouge_l(prediction, q.answer, q.aliases), 4),
    }


def summarize(name: str, rag: bool, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, mean F1 / ROUGE-L, refusal vs answerable accuracy and false abstentions of one condition."""
    by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_type[row["type"]].append(row)
    answerable = [r for r in rows if r["type"] != "unanswerable"]
    unanswerable = [r for r in rows if r["type"] == "unanswerable"]
    return {
        "model": name,
        "rag": rag,
        "total": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "accuracy": _share(r["correct"] for r in rows),
        "by_type": {t: _share(r["correct"] for r in v) for t, v in sorted(by_type.items())},
        "false_abstentions": sum(r["abstained"] for r in answerable),
        "f1": _mean(r["f1"] for r in rows if "f1" in r),
        "rouge_l": _mean(r["rouge_l"] for r in rows if "rouge_l" in r),
        "by_type_f1": {t: _mean(r["f1"] for r in v if "f1" in r) for t, v in sorted(by_type.items())},
        "by_type_rouge_l": {t: _mean(r["rouge_l"] for r in v if "rouge_l" in r) for t, v in sorted(by_type.items())},
        "answerable": len(answerable),
        "answerable_accuracy": _mean(r["correct"] for r in answerable),
        "unanswerable": len(unanswerable),
        # Share of unanswerable questions where the model abstained; None when the set has none.
        "refusal_accuracy": _mean(r["abstained"] for r in unanswerable),
    }


def _share(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0


def _mean(values) -> float | None:
    """Like `_share`, but None for no values: an absent metric must not read as a score of 0."""
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None
