"""Self-QA through a scripted teacher endpoint: parsing, the grounding filter and every drop reason."""

from __future__ import annotations

from collections import Counter

from hangjia.corpus.chunk import Chunk
from hangjia.instruct.selfqa import ANSWER_SYSTEM, QUESTION_SYSTEM, parse_answer, parse_questions, self_qa
from hangjia.instruct.synth import QAPair
from hangjia.llm.teacher import CachedTeacher, EndpointTeacher
from tests.fake_teacher import fake_endpoint


def chunk(cid: str, text: str) -> Chunk:
    return Chunk(cid, f"{cid}.md", "", 0, len(text), text)


PUMP = chunk(
    "pump", "The DW-6200 drain pump is part KP-2210 and costs 38.50 EUR. Error E24 means the drain pump is blocked."
)
WARRANTY = chunk(
    "warranty",
    "The standard warranty on Kestrel dishwashers is 2 years from the date of purchase. "
    "Registering online extends it to 5 years.",
)
KETTLE = chunk("kettle", "Descale the Kestrel kettle every 4 weeks with citric acid.")
BROKEN = chunk("broken", "A chunk whose question request fails on the server.")

QUESTIONS = {
    "pump": "1. What part number is the DW-6200 drain pump?\n"
    "2) What does error E24 mean on a DW-6200?\n"
    "3. According to the passage, what does the pump cost?\n"
    "4. How is the DW-6200 drain pump cleared?",
    "warranty": "Here are five questions:\n"
    "Q1: How long is the standard Kestrel dishwasher warranty?\nA1: 2 years.\n"
    "Q2: How long is the Kestrel warranty after registering online? A: 5 years.\n"
    "- What does error E24 mean on a DW-6200?\n"
    "Question 4: The standard warranty on Kestrel dishwashers is 2 years?\n"
    "**Who makes the Kestrel dishwasher drain pump motor?**",
    "kettle": "I'm sorry, I cannot write questions about kettles.",
}
ANSWERS = {
    "What part number is the DW-6200 drain pump?": "A: The drain pump is part KP-2210.",
    "What does error E24 mean on a DW-6200?": "Error E24 means the drain pump is blocked.",
    "How is the DW-6200 drain pump cleared?": " ".join(["Remove the drain pump cover and clear it."] * 8),
    "How long is the standard Kestrel dishwasher warranty?": "The standard warranty lasts 3 years including parts.",
    "How long is the Kestrel warranty after registering online?": "Answer: Registering online extends it to 5 years.",
    "Who makes the Kestrel dishwasher drain pump motor?": "I don't know.",
}


def scripted(messages):
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == QUESTION_SYSTEM:
        for cid, reply in QUESTIONS.items():
            if f"from {cid}.md" in user:
                return reply
        raise RuntimeError("no script for this chunk")  # BROKEN: the server answers 500
    assert system == ANSWER_SYSTEM
    return ANSWERS[user.split("Question: ")[1].split("\n")[0]]


def test_self_qa_keeps_grounded_pairs_and_counts_drops(tmp_path):
    chunks = [PUMP, WARRANTY, KETTLE, BROKEN]
    with fake_endpoint(scripted) as server:
        inner = EndpointTeacher(server.url, "fake-teacher", max_retries=0)
        teacher = CachedTeacher(inner, tmp_path / "cache.sqlite")
        pairs, drops = self_qa(chunks, teacher, questions_per_chunk=5, temperature=0.7, seed=3)
        sent = len(server.requests)

        assert pairs == [
            QAPair(
                "What part number is the DW-6200 drain pump?",
                "The drain pump is part KP-2210.",
                "self_qa",
                "pump",
                "pump.md",
                "self_qa",
            ),
            QAPair(
                "What does error E24 mean on a DW-6200?",
                "Error E24 means the drain pump is blocked.",
                "self_qa",
                "pump",
                "pump.md",
                "self_qa",
            ),
            QAPair(
                "How long is the Kestrel warranty after registering online?",
                "Registering online extends it to 5 years.",
                "self_qa",
                "warranty",
                "warranty.md",
                "self_qa",
            ),
        ]
        assert drops == Counter(
            {
                "request failed": 1,  # BROKEN's questions
                "unparseable": 1,  # the kettle refusal
                "question refers to the passage": 1,
                "duplicate question": 1,  # E24 again, from the warranty chunk
                "question copies the passage": 1,
                "too long": 1,
                "not grounded": 1,  # "3 years"
                "teacher abstained": 1,
            }
        )
        # 4 question requests, then one answer request per question that passed: 3 for pump, 3 for warranty.
        assert sent == 4 + 6
        assert [r["temperature"] for r in server.requests[4:]] == [0.0] * 6

        rerun = self_qa(chunks, CachedTeacher(inner, tmp_path / "cache.sqlite"), questions_per_chunk=5, seed=3)
        assert rerun == (pairs, drops)
        assert len(server.requests) == sent + 1  # only the failed request is tried again


def test_parse_questions_forms():
    assert parse_questions("Sure! Here are the questions:\n\n1. What is E24?\n2) Which part is KP-2210?") == [
        "What is E24?",
        "Which part is KP-2210?",
    ]
    assert parse_questions("Q: What is E24?\nA: A blocked pump.\nQ2: Where is the filter? A: Under the arm.") == [
        "What is E24?",
        "Where is the filter?",
    ]
    assert parse_questions("What is E24?\nThanks for reading.") == ["What is E24?"]
    assert parse_questions("Questions:\n* **How often should the kettle be descaled?**") == [
        "How often should the kettle be descaled?"
    ]
    assert parse_questions("I cannot do that.") == []


def test_parse_answer():
    assert parse_answer("Answer:  KP-2210\n") == "KP-2210"
    assert parse_answer("A1: 2 years.") == "2 years."
    assert parse_answer("About 2\nyears.") == "About 2 years."
