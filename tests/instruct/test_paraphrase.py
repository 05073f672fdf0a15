"""Question rewordings: every style keeps numbers and codes, typos are realistic and placed safely, seeds, dedup."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from hangjia.instruct.paraphrase import paraphrase_pairs
from hangjia.instruct.synth import QAPair
from tests.paths import KESTREL

PIECE = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_")  # letters, digits, one punctuation mark: "KP-2210" is 3 pieces
CODE_OR_NUMBER = re.compile(r"[A-Za-z]*\d[\w.,/-]*\w|\d")  # "KP-2210", "E24", "38.50", "1,000", "7"


class ScriptedTeacher:
    name = "scripted"

    def __init__(self, reply):
        self.reply = reply

    def complete(self, conversations, *, max_tokens=256, temperature=0.7, seed=0):
        return [self.reply(c[-1]["content"].rsplit("Question: ", 1)[1]) for c in conversations]


@pytest.fixture(scope="module")
def kestrel_pairs() -> list[QAPair]:
    rows = [json.loads(line) for line in (KESTREL / "questions.jsonl").read_text().splitlines() if line.strip()]
    return [QAPair(r["question"], r["answer"], r["type"], f"c{i}", "kestrel") for i, r in enumerate(rows)]


def pair(question: str, answer: str = "42") -> QAPair:
    return QAPair(question, answer, "faq", "chunk1", "faq.md")


def test_every_style_keeps_numbers_and_codes_and_copies_the_answer(kestrel_pairs):
    out, drops = paraphrase_pairs(kestrel_pairs, per_question=3)
    originals = {(p.chunk_id, p.answer, p.source): p.question for p in kestrel_pairs}
    assert Counter(p.kind for p in out).keys() == {"colloquial", "terse", "typo"}
    assert len(out) > 2 * len(kestrel_pairs)
    for p in out:
        question = originals[p.chunk_id, p.answer, p.source]  # answer, chunk and source copied as they were
        assert p.generator == "paraphrase" and p.prompt == ""
        for code in CODE_OR_NUMBER.findall(question):
            assert code in p.question, (p.kind, question, p.question)
    assert not drops["lost_code"]


def test_styles_read_as_intended():
    out, _ = paraphrase_pairs([pair("What is the price of the drain pump assembly KP-2210?")], seed=1)
    by_kind = {p.kind: p.question for p in out}
    assert by_kind["terse"] == "price drain pump assembly KP-2210"
    colloquial = by_kind["colloquial"]
    assert "what's the price of the drain pump assembly KP-2210?" in colloquial  # the question itself, unchanged
    assert colloquial != "What is the price of the drain pump assembly KP-2210?"
    own, _ = paraphrase_pairs([pair("A Kestrel dishwasher shows E24. What fault is that?")], styles=("colloquial",))
    assert "my Kestrel dishwasher shows E24" in own[0].question


def _one_edit(original: str, typo: str) -> bool:
    """Whether typo is original with two adjacent letters swapped, one dropped or one doubled (not the first)."""
    if typo[:1] != original[:1]:
        return False
    swaps = {original[:i] + original[i + 1] + original[i] + original[i + 2 :] for i in range(1, len(original) - 1)}
    drops = {original[:i] + original[i + 1 :] for i in range(1, len(original))}
    doubles = {original[:i] + original[i] + original[i:] for i in range(1, len(original))}
    return typo in swaps | drops | doubles


def test_typos_are_one_or_two_realistic_edits_in_plain_long_words(kestrel_pairs):
    pairs = [*kestrel_pairs, pair("Is KP-2210 or E24 or HP-08M ok for the DW-4500 at 38.50 EUR on a 230 V line?")]
    edited_words: Counter = Counter()
    for seed in range(5):
        for original in pairs:
            out, _ = paraphrase_pairs([original], styles=("typo",), per_question=1, seed=seed)
            before, after = PIECE.findall(original.question), PIECE.findall(out[0].question)
            assert len(before) == len(after)  # a typo never splits or joins words
            changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
            assert 1 <= len(changed) <= 2
            for old, new in changed:
                assert old.isalpha() and len(old) >= 4 and old[1:].islower(), old  # not "E24", "EUR", "the"
                assert _one_edit(old, new), (old, new)
                edited_words[old] += 1
    assert len(edited_words) > 20  # typos land in many different words, not always the same one


def test_no_typo_when_there_is_no_safe_word():
    out, drops = paraphrase_pairs([pair("E24 on DW-4500: fix?")], styles=("typo",), per_question=1)
    assert out == [] and drops == {"typo_not_applicable": 1}


def test_same_seed_same_rewrites_other_seed_other_rewrites(kestrel_pairs):
    first, _ = paraphrase_pairs(kestrel_pairs, seed=7)
    again, _ = paraphrase_pairs(kestrel_pairs, seed=7)
    other, _ = paraphrase_pairs(kestrel_pairs, seed=8)
    assert [p.to_dict() for p in first] == [p.to_dict() for p in again]
    assert {p.question for p in first} != {p.question for p in other}
    assert {p.question for p in first if p.kind == "terse"} == {p.question for p in other if p.kind == "terse"}


def test_duplicates_of_the_original_or_of_each_other_are_dropped():
    pairs = [pair("price drain pump"), pair("price drain pump", "38.50 EUR"), pair("How long is the warranty?")]
    out, drops = paraphrase_pairs(pairs, per_question=6)  # each style twice: terse repeats itself
    questions = [p.question.casefold() for p in out]
    assert len(questions) == len(set(questions))
    assert not {p.question.casefold() for p in pairs} & set(questions)
    assert drops["duplicate"] >= 3  # terse == original (twice), the second pair's copies of the first's rewrites


def test_pairs_with_a_context_prompt_are_left_alone_and_unknown_styles_refused():
    with_prompt = QAPair("What is E24?", "Drain pump blocked [1]", "raft_gold", "c", "s", "raft", "Context: ...")
    assert paraphrase_pairs([with_prompt]) == ([], Counter({"has_context": 1}))
    with pytest.raises(ValueError, match="Unknown paraphrase style 'pirate'"):
        paraphrase_pairs([pair("What is E24?")], styles=("pirate",))


def test_teacher_rewrites_are_kept_only_when_faithful_and_new():
    replies = {
        "What does E24 mean on the DW-4500?": '"What is the meaning of error E24 on a DW-4500?"',
        "What is the price of KP-2210?": "How much is the drain pump?",  # lost the code
        "How long is the warranty?": "How long is the warranty?",  # unchanged
        "Where is the filter?": None,  # request failed
    }
    pairs = [pair(q) for q in replies]
    out, drops = paraphrase_pairs(pairs, styles=(), teacher=ScriptedTeacher(replies.get))
    assert [(p.question, p.kind, p.answer) for p in out] == [
        ("What is the meaning of error E24 on a DW-4500?", "teacher", "42")
    ]
    assert drops == {"teacher_lost_code": 1, "teacher_unchanged": 1, "teacher_failed": 1}


def test_chinese_questions_are_reworded_in_chinese_with_their_codes():
    pairs = [
        QAPair("LS-60A的额定功率是什么？", "2 千瓦", "table", "c1", "docs/product_overview.md"),
        QAPair("E4的用户可做的处理是什么？", "需上门维修", "table", "c2", "docs/fault_codes.md"),
    ]
    out, drops = paraphrase_pairs(pairs, per_question=3, seed=0)
    by_kind = {(p.kind, p.answer): p.question for p in out}
    assert by_kind[("terse", "2 千瓦")] == "LS-60A 额定功率"
    assert by_kind[("terse", "需上门维修")] == "E4 用户可做 处理"
    colloquial = by_kind[("colloquial", "2 千瓦")]
    assert colloquial.endswith(("LS-60A的额定功率是什么？", "谢谢！", "有谁知道吗？")) and "LS-60A" in colloquial
    assert drops["typo_not_applicable"] == 2 and not drops["lost_code"]  # no rule makes a Chinese typo
