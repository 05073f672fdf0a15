"""Domain QA evaluation: every model × RAG off/on over a questions.jsonl, scored per question type."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hangjia.engine import Engine, GenerationParams
from hangjia.errors import HangjiaError
from hangjia.eval.scoring import abstains, is_correct


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
) -> dict[str, Any]:
    """Greedy answers for every condition, scored; `on_batch(n)` reports n questions done."""
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    summaries, answers = [], []
    for name, rag in conditions(engine):
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
        rows = []
        for i, q in enumerate(questions):
            pred = predictions[i]
            rows.append(
                {
                    "id": q.id,
                    "type": q.type,
                    "model": name,
                    "rag": rag,
                    "question": q.question,
                    "answer": q.answer,
                    "prediction": pred,
                    "correct": is_correct(pred, q.answer, q.aliases, q.type),
                    "abstained": abstains(pred),
                    "sources": [c["source"] for c in prepared[i][1]],
                }
            )
        summaries.append(summarize(name, rag, rows))
        answers.extend(rows)
    return {"conditions": summaries, "answers": answers, "questions": [asdict(q) for q in questions]}


def summarize(name: str, rag: bool, rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_type: dict[str, list[bool]] = defaultdict(list)
    for row in rows:
        by_type[row["type"]].append(row["correct"])
    answerable = [r for r in rows if r["type"] != "unanswerable"]
    return {
        "model": name,
        "rag": rag,
        "total": len(rows),
        "correct": sum(r["correct"] for r in rows),
        "accuracy": _share(r["correct"] for r in rows),
        "by_type": {t: _share(v) for t, v in sorted(by_type.items())},
        "false_abstentions": sum(r["abstained"] for r in answerable),
    }


def _share(values) -> float:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else 0.0
