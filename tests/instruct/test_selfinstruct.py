"""Self-Instruct through a scripted teacher endpoint: the paper's filters, the in-context mix, grounded answers."""

from __future__ import annotations

import json
from collections import Counter

from hangjia.corpus.chunk import Chunk
from hangjia.instruct.selfinstruct import (
    CONTEXT_SYSTEM,
    TASK_SYSTEM,
    max_rouge_l,
    parse_tasks,
    reject_reason,
    self_instruct,
)
from hangjia.instruct.synth import QAPair
from hangjia.llm.teacher import EndpointTeacher
from tests.fake_teacher import fake_endpoint
from tests.paths import KESTREL

SEEDS = [json.loads(line) for line in (KESTREL / "seed_tasks.jsonl").open()]
NOVEL = "What is the part number and price of the DW-6200 drain pump?"
NOVEL_2 = "How often should the coarse filter of a Kestrel dishwasher be cleaned?"
ROUND_1 = (
    "Task 16: Explain the difference between two Kestrel dishwasher error codes in at most three sentences.\n"
    "Task 17: Draw a diagram of the DW-6200 drain pump assembly.\n"
    f"Task 18: {NOVEL}\n"
    'Task 19: "Quote" the warranty terms for Kestrel dishwashers.\n'
    "Task 20: Say hi."
)
ROUND_2 = f"1. {NOVEL.replace('What is', 'What are')}\n2. {NOVEL_2}"


def user_turns(server, system: str) -> list[str]:
    return [r["messages"][-1]["content"] for r in server.requests if r["messages"][0]["content"] == system]


def test_self_instruct_filters_as_in_the_paper():
    rounds = iter([ROUND_1, ROUND_2])

    def scripted(messages):
        if messages[0]["content"] == TASK_SYSTEM:
            return next(rounds)
        return {NOVEL: "KP-2210, 38.50 EUR.", NOVEL_2: "Every month."}[messages[-1]["content"]]

    with fake_endpoint(scripted) as server:
        teacher = EndpointTeacher(server.url, "fake-teacher")
        pairs, drops = self_instruct(SEEDS, teacher, target=2, prompts_per_round=1, max_rounds=5, seed=1)

    assert pairs == [
        QAPair(NOVEL, "KP-2210, 38.50 EUR.", "self_instruct", "", "", "self_instruct"),
        QAPair(NOVEL_2, "Every month.", "self_instruct", "", "", "self_instruct"),
    ]
    assert drops == Counter(
        {
            "too similar (ROUGE-L)": 2,  # a reworded seed task in round 1, a reworded round-1 task in round 2
            "unsupported keyword": 1,
            "starts with a non-letter": 1,
            "instruction too short": 1,
        }
    )
    first, second = user_turns(server, TASK_SYSTEM)
    # 8 in-context tasks: all seeds while nothing is generated, then the generated one among them.
    assert "Task 8:" in first and "Task 9:" not in first and NOVEL not in first
    assert "Task 8:" in second and NOVEL in second


def test_self_instruct_answers_from_retrieved_passages():
    pump = Chunk("c1", "parts.md", "", 0, 60, "The DW-6200 drain pump is part KP-2210 and costs 38.50 EUR.")
    other = Chunk("c2", "faq.md", "", 0, 40, "Kestrel dishwashers ship with a 2 year warranty.")
    invented = "How long does a Kestrel dishwasher warranty last?"

    def scripted(messages):
        if messages[0]["content"] == TASK_SYSTEM:
            return f"Task 1: {NOVEL}\nTask 2: {invented}\nTask 3: Which colour is the Kestrel logo on new models?"
        assert messages[0]["content"] == CONTEXT_SYSTEM
        user = messages[-1]["content"]
        return "The drain pump is KP-2210, 38.50 EUR." if NOVEL in user else "It lasts 7 years."

    def retrieve(question: str) -> list[Chunk]:
        return [] if "colour" in question else [other, pump]

    with fake_endpoint(scripted) as server:
        teacher = EndpointTeacher(server.url, "fake-teacher")
        pairs, drops = self_instruct(SEEDS, teacher, target=5, retrieve=retrieve, prompts_per_round=1, max_rounds=1)

    assert pairs == [
        QAPair(NOVEL, "The drain pump is KP-2210, 38.50 EUR.", "self_instruct", "c1", "parts.md", "self_instruct")
    ]
    assert drops == Counter({"not grounded": 1, "no passages retrieved": 1})
    answer_turns = user_turns(server, CONTEXT_SYSTEM)  # in arrival order: the two requests run concurrently
    assert len(answer_turns) == 2
    [answer_turn] = [t for t in answer_turns if t.endswith(NOVEL)]
    assert pump.text in answer_turn and other.text in answer_turn


def test_reject_reason_and_parse():
    assert reject_reason("Plot the energy use of the heat pump per month.") == "unsupported keyword"
    assert reject_reason("Explain how to reset the heat pump after a power cut.") is None
    assert reject_reason("Explain the mapping of error codes to faults.") is None  # "map" only as a whole word
    assert reject_reason("1. Explain the fault.") == "starts with a non-letter"
    assert reject_reason(" ".join(["word"] * 151)) == "instruction too long"
    reply = "Here you go:\nTask 1: Explain E24\nin two sentences.\n2) List the filters.\nI hope these help!"
    assert parse_tasks(reply) == [
        "Explain E24 in two sentences.",
        "List the filters.",
    ]


def test_rouge_l_sees_cjk_and_wording():
    assert max_rouge_l("解释洗碗机错误代码E24的含义", ["解释洗碗机错误代码E25的含义"]) > 0.7
    assert max_rouge_l("List the filters.", ["Explain the warranty for a heat pump."]) < 0.3
    assert max_rouge_l("解释洗碗机错误代码E24的含义", ["列出热泵的所有备件"]) < 0.3
    assert max_rouge_l("E24的含义", ["E25的含义"]) == 0.75  # e24|的|含|义: a CJK character does not join a word
    assert max_rouge_l("anything", []) == 0.0
