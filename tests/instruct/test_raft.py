"""RAFT examples: the inference prompt format, citations of the gold passage, safe abstentions, p_gold, seeds."""

from __future__ import annotations

import re

import pytest

from hangjia.core.prompts import ABSTENTION, SYSTEM_PROMPT, with_context
from hangjia.core.words import normalize
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.index import BM25Index
from hangjia.eval.scoring import abstains
from hangjia.instruct.raft import raft_examples
from hangjia.instruct.synth import QAPair, is_grounded

TEXTS = {
    "codes.md": [
        "Error codes\nE24 – Drain pump blocked. Clean the drain filter and check the pump impeller.",
        "Error codes\nE11 – Water inlet fault. Open the tap fully and check the inlet hose.",
        "Error codes\nE15 – Leak protection triggered. Close the tap and call service.",
    ],
    "parts.csv": [
        "KP-2210\npart_number: KP-2210; description: Drain pump assembly; price_eur: 38.50",
        "KP-1105\npart_number: KP-1105; description: Inlet valve (double solenoid); price_eur: 27.80",
    ],
    "guide.txt": [
        "Cleaning\nRinse the filters under running water every two weeks. A blocked filter slows draining.",
        "Installation\nThe drain hose must not be higher than 900 mm above the floor.",
        "Noise\nA humming pump during draining is normal. A rattling pump may hold a foreign object.",
    ],
    "warranty.md": [
        "Warranty\nThe warranty lasts 24 months from delivery. Pump faults are covered.",
        "Service\nCall the hotline on 0800 318 4400 to book an engineer for the error code shown.",
    ],
}
CHUNKS = [Chunk(f"{src}#{i}", src, "", 0, len(t), t) for src, texts in TEXTS.items() for i, t in enumerate(texts)]
BY_ID = {c.id: c for c in CHUNKS}
PAIRS = [
    QAPair("What does E24 mean?", "Drain pump blocked", "definition", "codes.md#0", "codes.md"),
    QAPair("What does E11 mean?", "Water inlet fault", "definition", "codes.md#1", "codes.md"),
    QAPair("What is the price of KP-2210?", "38.50 EUR", "record", "parts.csv#0", "parts.csv"),
    QAPair("How often should the filters be rinsed?", "every two weeks", "faq", "guide.txt#0", "guide.txt"),
    QAPair("How high may the drain hose be?", "900 mm", "numeric", "guide.txt#1", "guide.txt"),
    QAPair("How long is the warranty?", "24 months", "numeric", "warranty.md#0", "warranty.md"),
]


@pytest.fixture(scope="module")
def search():
    index = BM25Index.build(CHUNKS)
    return lambda query, k: [hit.chunk for hit in index.search(query, k)]


def passages_of(prompt: str) -> list[Chunk]:
    """The chunks shown in a prompt, in the order shown (read back from the "[i] (source) text" blocks)."""
    found = [(prompt.find(f"({c.source}) {c.text}"), c) for c in CHUNKS if f"({c.source}) {c.text}" in prompt]
    return [c for _, c in sorted(found, key=lambda x: x[0])]


def holds(answer: str, text: str) -> bool:
    return is_grounded(answer, text) or normalize(answer) in normalize(text)


def test_prompt_is_the_inference_format_and_the_citation_points_at_gold(search):
    examples, drops = raft_examples(PAIRS, BY_ID, search, distractors=2, p_gold=1.0)
    assert len(examples) == len(PAIRS) and not drops
    positions = set()
    for ex, pair in zip(examples, PAIRS, strict=True):
        shown = passages_of(ex.prompt)
        assert len(shown) == 3
        assert ex.prompt == with_context(pair.question, shown)
        assert ex.question == pair.question and ex.user_turn() == ex.prompt
        assert (ex.generator, ex.kind, ex.chunk_id, ex.source) == ("raft", "raft_gold", pair.chunk_id, pair.source)
        cited = int(re.fullmatch(re.escape(pair.answer) + r" \[(\d)\]", ex.answer)[1])
        assert shown[cited - 1].id == pair.chunk_id
        assert f"[{cited}] ({pair.source})" in ex.prompt
        positions.add(cited)
    assert len(positions) > 1  # the gold passage is not always in the same place


def test_distractors_come_from_other_documents_when_possible(search):
    examples, _ = raft_examples(PAIRS, BY_ID, search, distractors=2, p_gold=1.0)
    for ex, pair in zip(examples, PAIRS, strict=True):
        others = [c for c in passages_of(ex.prompt) if c.id != pair.chunk_id]
        assert all(c.source != pair.source for c in others), (pair.question, [c.id for c in others])


def test_abstentions_use_the_system_prompt_words_and_show_no_passage_with_the_answer(search):
    examples, _ = raft_examples(PAIRS, BY_ID, search, distractors=2, p_gold=0.0)
    assert ABSTENTION == "I don't know" and f'"{ABSTENTION}"' in SYSTEM_PROMPT and abstains(ABSTENTION)
    abstaining = [ex for ex in examples if ex.kind == "raft_abstain"]
    assert abstaining
    for ex in abstaining:
        pair = next(p for p in PAIRS if p.question == ex.question)
        assert ex.answer == ABSTENTION
        shown = passages_of(ex.prompt)
        assert shown and pair.chunk_id not in {c.id for c in shown}
        assert not any(holds(pair.answer, c.text) for c in shown)


def test_abstentions_show_near_misses_from_the_same_document_and_never_the_answer():
    gold = Chunk("a#0", "a.md", "", 0, 1, "E24 – Drain pump blocked.")
    twin = Chunk("b#0", "b.md", "", 0, 1, "Code E24 means the drain pump is blocked; see section 7.")
    sibling = Chunk("a#1", "a.md", "", 0, 1, "E25 – Drain pump runs dry.")
    other = Chunk("c#0", "c.md", "", 0, 1, "E11 is a water inlet fault.")
    pair = QAPair("What does E24 mean?", "drain pump blocked", "definition", "a#0", "a.md")
    hits = [gold, twin, sibling, other]

    examples, _ = raft_examples([pair], {"a#0": gold}, lambda q, k: hits[:k], distractors=2, p_gold=0.0)
    assert examples[0].kind == "raft_abstain" and examples[0].answer == ABSTENTION
    # The question's best hits without the answer, in search order: the same document's next code comes first.
    assert examples[0].prompt == with_context(pair.question, [sibling, other])

    # With the gold passage, distractors still come from other documents and never hold the answer.
    examples, _ = raft_examples([pair], {"a#0": gold}, lambda q, k: hits[:k], distractors=1, p_gold=1.0)
    assert examples[0].kind == "raft_gold" and "(c.md)" in examples[0].prompt and "(b.md)" not in examples[0].prompt


def test_share_of_gold_follows_p_gold_and_seed_makes_it_repeatable():
    distractors = [Chunk(f"d{i}", f"d{i}.md", "", 0, 1, f"Unrelated passage number {i}.") for i in range(3)]
    golds = {f"g{i}": Chunk(f"g{i}", "g.md", "", 0, 1, f"Fact {i}: the value is {1000 + i}.") for i in range(600)}
    pairs = [QAPair(f"What is value {i}?", str(1000 + i), "numeric", f"g{i}", "g.md") for i in range(600)]

    def search(query, k):
        return distractors[:k]

    examples, drops = raft_examples(pairs, golds, search, distractors=2, p_gold=0.7, seed=5)
    share = sum(ex.kind == "raft_gold" for ex in examples) / len(examples)
    assert 0.65 < share < 0.75  # 600 draws: standard deviation 0.019
    assert all(ex.answer == ABSTENTION for ex in examples if ex.kind == "raft_abstain")

    again, _ = raft_examples(pairs, golds, search, distractors=2, p_gold=0.7, seed=5)
    other, _ = raft_examples(pairs, golds, search, distractors=2, p_gold=0.7, seed=6)
    assert [e.to_dict() for e in again] == [e.to_dict() for e in examples]
    assert [e.to_dict() for e in other] != [e.to_dict() for e in examples]
    positions = [e.answer[-2] for e in examples if e.kind == "raft_gold"]
    assert {"1", "2", "3"} == set(positions)


def test_pairs_without_a_gold_chunk_or_distractors_are_counted_not_kept(search):
    lost = QAPair("What does E24 mean?", "Drain pump blocked", "definition", "gone", "codes.md")
    lonely = QAPair("zzz?", "x", "faq", "codes.md#0", "codes.md")  # no hits, and no other chunk to draw
    examples, drops = raft_examples([lost, lonely], {"codes.md#0": BY_ID["codes.md#0"]}, search)
    assert examples == [] and drops == {"no_gold_chunk": 1, "no_distractors": 1}
    with pytest.raises(ValueError, match="p_gold"):
        raft_examples(PAIRS, BY_ID, search, p_gold=1.5)


def test_a_two_hop_question_shows_both_hops_and_cites_both():
    first = Chunk("parts#7", "appliances.csv", "", 0, 1, "DW-4500: drain pump KP-2210.")
    gold = Chunk("prices#3", "prices.csv", "", 0, 1, "KP-2210: 38.50 EUR.")
    others = [Chunk(f"x#{i}", f"x{i}.md", "", 0, 1, f"Unrelated passage {i}.") for i in range(4)]
    pair = QAPair(
        "What is the price of the drain pump of DW-4500?",
        "38.50 EUR",
        "multi_hop",
        "prices#3",
        "prices.csv",
        generator="kg",
        support=["parts#7"],
    )
    by_id = {c.id: c for c in [first, gold, *others]}
    examples, _ = raft_examples([pair] * 1, by_id, lambda q, k: [first, *others][:k], distractors=2, p_gold=1.0)
    shown = passages_of_any(examples[0].prompt, [first, gold, *others])
    assert len(shown) == 3 and first in shown and gold in shown  # one distractor made room for the first hop
    marks = sorted(int(n) for n in re.findall(r"\[(\d)\]", examples[0].answer))
    assert examples[0].answer.startswith("38.50 EUR [") and marks == sorted(
        [shown.index(first) + 1, shown.index(gold) + 1]
    )
    assert (
        QAPair.from_dict(pair.to_dict()) == pair and QAPair.from_dict({**pair.to_dict(), "support": []}).support == []
    )


def passages_of_any(prompt: str, chunks: list[Chunk]) -> list[Chunk]:
    found = [(prompt.find(f"({c.source}) {c.text}"), c) for c in chunks if f"({c.source}) {c.text}" in prompt]
    return [c for _, c in sorted(found, key=lambda x: x[0])]
