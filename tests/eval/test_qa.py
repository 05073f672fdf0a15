"""Domain QA scoring per condition, with a scripted engine: no model needed."""

from __future__ import annotations

import pytest

from hangjia.eval.qa import Question, evaluate, summarize
from hangjia.llm.generation import Completion

QUESTIONS = [
    Question("q1", "What does E24 mean?", "drain pump blocked", "lookup"),
    Question("q2", "What does KP-2210 cost?", "38.50 EUR", "numeric"),
    Question("q3", "What does the DW-4500 weigh?", "unanswerable", "unanswerable"),
    Question("q4", "Who is the CEO?", "unanswerable", "unanswerable"),
]
SCRIPT = {  # model -> question id -> answer
    "base": {"q1": "The pump.", "q2": "I don't know.", "q3": "About 12 kg.", "q4": "I don't know."},
    "domain": {"q1": "drain pump blocked", "q2": "It costs 38.50 EUR.", "q3": "Unknown.", "q4": "Not stated."},
}


class ScriptedEngine:
    """What qa.evaluate uses of an Engine, answering from SCRIPT."""

    model_names = ["base", "domain"]
    index = None

    def prepare(self, messages, rag):
        return messages, []

    def generate_batch(self, batch, name, params):
        by_question = {q.question: q.id for q in QUESTIONS}
        return [Completion(SCRIPT[name][by_question[m[-1]["content"]]], 0, 0, "stop") for m in batch]


@pytest.fixture(scope="module")
def results():
    return evaluate(ScriptedEngine(), QUESTIONS, max_new_tokens=8, batch_size=3)


def test_existing_keys_and_accuracy_are_kept(results):
    base, domain = results["conditions"]
    assert (base["model"], base["rag"], domain["model"]) == ("base", False, "domain")
    assert base["total"] == 4 and base["correct"] == 1 and base["accuracy"] == 0.25
    assert base["by_type"] == {"lookup": 0.0, "numeric": 0.0, "unanswerable": 0.5}
    assert base["false_abstentions"] == 1  # "I don't know" to an answerable question
    assert domain["accuracy"] == 1.0 and domain["false_abstentions"] == 0
    assert {"id", "type", "model", "rag", "prediction", "correct", "abstained", "sources", "f1", "rouge_l"} <= set(
        results["answers"][0]
    )


def test_only_the_conditions_asked_for_are_answered(results):
    only = evaluate(ScriptedEngine(), QUESTIONS, max_new_tokens=8, only=[("domain", False)])
    assert [(c["model"], c["rag"]) for c in only["conditions"]] == [("domain", False)]
    assert only["conditions"][0] == results["conditions"][1] and {a["model"] for a in only["answers"]} == {"domain"}


def test_refusal_accuracy_is_reported_apart_from_answerable_accuracy(results):
    base, domain = results["conditions"]
    assert (base["answerable"], base["unanswerable"]) == (2, 2)
    assert base["answerable_accuracy"] == 0.0
    assert base["refusal_accuracy"] == 0.5  # abstained on q4, answered q3
    assert domain["answerable_accuracy"] == 1.0 and domain["refusal_accuracy"] == 1.0


def test_mean_f1_and_rouge_l_follow_squad2_for_unanswerable_questions(results):
    base, domain = results["conditions"]
    # q1: "pump" vs "drain pump blocked" (P 1, R 1/3) = 0.5; q2 abstained = 0; q3 answered = 0; q4 abstained = 1.
    assert base["f1"] == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    # ROUGE-L keeps "the": "the pump" vs "drain pump blocked", LCS 1, P 1/2, R 1/3 = 0.4.
    assert base["rouge_l"] == pytest.approx((0.4 + 0 + 0 + 1) / 4)
    assert base["by_type_f1"] == {"lookup": 0.5, "numeric": 0.0, "unanswerable": 0.5}
    # q2: "it costs 38.50 eur" vs "38.50 eur": P 2/4, R 1 = 2/3.
    assert domain["f1"] == pytest.approx((1 + 2 / 3 + 1 + 1) / 4, abs=1e-4)


def test_summary_without_unanswerable_questions_has_no_refusal_accuracy():
    rows = [
        {"type": "lookup", "correct": True, "abstained": False, "f1": 1.0, "rouge_l": 1.0},
        {"type": "numeric", "correct": False, "abstained": True, "f1": 0.0, "rouge_l": 0.0},
    ]
    summary = summarize("base", False, rows)
    assert summary["refusal_accuracy"] is None  # not 0.0: nothing was measured
    assert summary["answerable_accuracy"] == 0.5 and summary["false_abstentions"] == 1


def test_the_guard_replaces_blocked_rag_answers_and_the_summary_keeps_the_raw_figures():
    from hangjia.corpus.chunk import Chunk
    from hangjia.corpus.index import BM25Index
    from hangjia.llm.guard import AnswerGuard

    chunks = [
        Chunk("c0", "codes.md", "", 0, 1, "E24 – Drain pump blocked."),
        Chunk("c1", "parts.csv", "", 0, 1, "KP-2210 drain pump assembly, 38.50 EUR; the DW-4500 weighs 48 kg."),
    ]
    questions = [
        Question("q1", "What does E24 mean?", "drain pump blocked", "lookup"),
        Question("q2", "What does KP-2210 cost?", "38.50 EUR", "numeric"),
        Question("q3", "What does E77 mean?", "unanswerable", "unanswerable"),  # E77: in no document
        Question("q4", "What does the DW-4500 cost?", "unanswerable", "unanswerable"),
    ]
    script = {"q1": "drain pump blocked [1]", "q2": "38.50 EUR [1]", "q3": "drain pump blocked", "q4": "99 EUR"}

    class IndexedEngine(ScriptedEngine):
        model_names = ["domain"]
        index = BM25Index.build(chunks)

        def prepare(self, messages, rag):
            return messages, [{"chunk_id": c.id, "source": c.source} for c in chunks] if rag else []

        def generate_batch(self, batch, name, params):
            by_question = {q.question: q.id for q in questions}
            return [Completion(script[by_question[m[-1]["content"]]], 0, 0, "stop") for m in batch]

    out = evaluate(IndexedEngine(), questions, max_new_tokens=8, guard=AnswerGuard(BM25Index.build(chunks)))
    off, on = out["conditions"]
    assert "unguarded" not in off  # no passages, nothing to guard
    assert on["refusal_accuracy"] == 1.0 and on["unguarded"]["refusal_accuracy"] == 0.0
    assert on["answerable_accuracy"] == on["unguarded"]["answerable_accuracy"] == 1.0
    assert on["guard_blocked"] == {"ungrounded": 1, "unknown_terms": 1}
    rows = {r["id"]: r for r in out["answers"] if r["rag"]}
    assert rows["q3"]["guard"] == "unknown_terms" and rows["q3"]["raw_prediction"] == "drain pump blocked"
    assert rows["q4"]["guard"] == "ungrounded" and rows["q4"]["abstained"] and rows["q4"]["correct"]
    assert rows["q1"]["guard"] is None and rows["q1"]["prediction"] == "drain pump blocked [1]"
