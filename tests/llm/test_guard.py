"""The answer guard: unknown codes and names in the question, made-up numbers and codes in the answer."""

from __future__ import annotations

import pytest

from hangjia.core.citations import strip_markers
from hangjia.core.prompts import NOT_IN_DOCUMENTS, NOT_IN_DOCUMENTS_ZH
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.index import BM25Index
from hangjia.eval.scoring import abstains
from hangjia.llm.guard import AnswerGuard, question_terms

CHUNKS = [
    Chunk("codes#0", "dishwasher_error_codes.md", "", 0, 1, "E24 – Drain pump blocked. E25 – Drain pump runs dry."),
    Chunk("parts#0", "parts.csv", "", 0, 1, "part_number: KP-2210; description: Drain pump assembly; price_eur: 38.50"),
    Chunk(
        "centres#0", "service_centres.json", "", 0, 1, "Brennvik service centre, Harbour Road 4, phone 0800 318 4400"
    ),
    Chunk("zh#0", "故障代码.md", "", 0, 1, "E1：缺水保护。LS-16Q 的额定功率为 2000 W。"),
]


@pytest.fixture(scope="module")
def guard():
    return AnswerGuard(BM25Index.build(CHUNKS))


def test_question_terms_are_codes_and_names_not_sentence_starts_or_serial_numbers():
    assert question_terms("What does error code E77 mean on a Kestrel dishwasher?") == ["E77", "Kestrel"]
    assert question_terms("How much refrigerant does the Thermora HP-16M contain?") == ["HP-16M", "Thermora"]
    assert question_terms("Which year? Founded when.") == []  # capitalised only because a sentence starts
    assert question_terms("Is serial 12-2408-00310 or A60-2309-01234 affected?") == []  # values, not names
    assert question_terms("LS-16Q 工作时的噪音是多少分贝？") == ["LS-16Q"]


@pytest.mark.parametrize(
    ("question", "unknown"),
    [
        ("What does error code E77 mean?", "E77"),
        ("What are the opening hours of the centre in Galloway Cross?", "Galloway, Cross"),
        ("How much does the KP-9999 cost?", "KP-9999"),
        ("LS-13Q 的热交换器是什么材质？", "LS-13Q"),
    ],
)
def test_a_question_naming_what_no_document_mentions_is_blocked(guard, question, unknown):
    verdict = guard.before(question)
    assert not verdict.passed and verdict.reason == "unknown_terms"
    assert verdict.detail == f"the documents never mention {unknown}"


@pytest.mark.parametrize(
    "question",
    [
        "What does error code E24 mean?",
        "What does the kp-2210 drain pump cost?",  # case does not matter
        "What is the phone number of the Brennvik service centre?",
        "What is the fax number of the Brennvik service centre?",  # known names: the model must abstain itself
        "LS-16Q 的额定功率是多少？",
    ],
)
def test_a_question_about_what_the_documents_mention_passes(guard, question):
    assert guard.before(question).passed


def test_an_answer_with_a_number_or_code_the_passages_lack_is_blocked(guard):
    passages = [c.text for c in CHUNKS[:2]]
    q = "How much does the drain pump assembly cost?"
    assert guard.after(q, "38.50 EUR [2]", passages, abstained=False).passed  # the citation marker is no value
    blocked = guard.after(q, "42.00 EUR [2]", passages, abstained=False)
    assert (blocked.passed, blocked.reason, blocked.detail) == (
        False,
        "ungrounded",
        "the passages do not contain 42.00",
    )
    code = guard.after("Which part fits?", "KP-3302", passages, abstained=False)
    assert not code.passed and "KP-3302" in code.detail
    # A number the question itself gave is no invention; an abstention passes as it is.
    assert guard.after("Is 1,200 EUR the price?", "No, it is 38.50, not 1200", passages, abstained=False).passed
    assert guard.after(q, "I don't know", passages, abstained=True).passed


def test_the_reply_is_an_abstention_in_the_question_language(guard):
    assert guard.reply("What does E77 mean?") == NOT_IN_DOCUMENTS
    assert guard.reply("E77 是什么意思？") == NOT_IN_DOCUMENTS_ZH
    assert abstains(NOT_IN_DOCUMENTS) and abstains(NOT_IN_DOCUMENTS_ZH)


def test_citation_markers_are_stripped_in_all_their_forms():
    assert strip_markers("38.50 EUR [2]") == "38.50 EUR"
    assert strip_markers("blocked [1][2] and dry [1, 2]") == "blocked and dry"
    assert strip_markers("缺水保护【1】。") == "缺水保护。"
    assert strip_markers("see [1-3] or ［1，2］") == "see or"
