"""The select stage's policy on hand-made pairs: each step drops what it should, with its reason, and nothing else."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from hangjia.core.config import SelectConfig
from hangjia.instruct.forgetting_guard import load_general_prompts, mix_in
from hangjia.instruct.selection import curate, dedup, group_of, heuristics, round_robin_by_chunk, to_budget
from hangjia.instruct.synth import QAPair


def pair(q: str, a: str, chunk: str = "c1", source: str = "a.md", generator: str = "extractive") -> QAPair:
    return QAPair(q, a, "lookup", chunk, source, generator=generator)


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic stand-in embedder: hashed word counts, L2-normalised (same words → same vector)."""
    out = np.zeros((len(texts), 64), dtype=np.float32)
    for r, text in enumerate(texts):
        for word in text.lower().split():
            out[r, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_heuristics_drop_with_reasons():
    pairs = [
        pair("What does code E24 mean?", "drain pump blocked"),
        pair("What does code E24 mean?", ""),
        pair("E24?", "drain pump blocked"),
        pair("Is the drain pump blocked at E24?", "drain pump blocked"),
    ]
    kept, drops = heuristics(pairs)
    assert kept == pairs[:1]
    assert drops == Counter({"empty answer": 1, "question under 3 words": 1, "answer given in the question": 1})


def test_dedup_exact_and_near_keep_the_first():
    base = (
        "How long is the warranty on the Thermora heat pump compressor when a certified installer services it"
        " every year and records each visit in the logbook that ships with the unit"
    )
    pairs = [
        pair(base + "?", "60 months"),
        pair(base + "?", "60 months"),  # exact
        pair(base + " yearly?", "60 months"),  # near: one word added to a long question
        pair("Which part number is the drain pump assembly of the DW-4500?", "KP-2210"),
    ]
    kept, drops = dedup(pairs, SelectConfig(semantic_dup_threshold=None), embed=None)
    assert kept == [pairs[0], pairs[3]]
    assert drops == Counter({"exact duplicate": 1, "near duplicate": 1})


def test_budget_random_is_seeded_and_kcenter_covers_clusters():
    # Three tight clusters of very different wording; k-center with budget 3 must take one from each.
    topics = ["drain pump filter blocked", "warranty months compressor", "recall serial range affected"]
    pairs = [pair(f"Question {i} about {t} here?", f"{t} answer {i}") for t in topics for i in range(5)]
    chosen, drops = to_budget(pairs, SelectConfig(budget=3, diversity="kcenter"), bag_of_words)
    assert {next(t for t in topics if t in p.question) for p in chosen} == set(topics)
    assert drops == Counter({"over the budget (kcenter)": 12})
    cfg = SelectConfig(budget=5, diversity="random", seed=1)
    assert to_budget(pairs, cfg, None)[0] == to_budget(pairs, cfg, None)[0]
    assert to_budget(pairs, cfg, None)[0] != to_budget(pairs, cfg.model_copy(update={"seed": 2}), None)[0]
    assert to_budget(pairs, SelectConfig(budget=None), None)[0] == pairs


def test_budget_without_diversity_takes_the_best_scores_in_input_order():
    pairs = [pair(f"Which value has row number {i}?", f"{i} kg") for i in range(6)]
    scores = {p.question: s for p, s in zip(pairs, [0.2, 0.9, 0.4, 0.8, 0.1, 0.7], strict=True)}
    chosen, drops = to_budget(pairs, SelectConfig(budget=3, diversity="none"), None, scores)
    assert [p.answer for p in chosen] == ["1 kg", "3 kg", "5 kg"]
    assert drops == Counter({"over the budget (best ifd)": 3})
    chosen, drops = to_budget(pairs, SelectConfig(budget=2, diversity="none"), None)
    assert [p.answer for p in chosen] == ["0 kg", "1 kg"]
    assert drops == Counter({"over the budget (first n)": 4})


def test_budget_by_chunks_covers_every_passage_before_a_second_pair_of_any():
    # Chunk a holds the four best-scoring pairs; top-score would spend a budget of 4 on it alone.
    spec = [("a", 0.9), ("a", 0.8), ("a", 0.7), ("a", 0.6), ("b", 0.5), ("c", 0.2), ("b", 0.4), ("", 0.3)]
    pairs = [
        pair(f"Which value does row {i} of chunk {c or 'none'} hold?", f"{i} kg", chunk=c)
        for i, (c, _) in enumerate(spec)
    ]
    scores = {p.question: s for p, (_, s) in zip(pairs, spec, strict=True)}
    chosen, drops = to_budget(pairs, SelectConfig(budget=4, diversity="chunks"), None, scores)
    assert [p.answer for p in chosen] == ["0 kg", "4 kg", "5 kg", "7 kg"]  # a, b, c and the chunkless pair
    assert drops == Counter({"over the budget (chunks)": 4})
    # Budget 6: the second round goes by score (a's 0.8, then b's 0.4), in input order once chosen.
    assert round_robin_by_chunk(pairs, 6, scores) == [0, 4, 7, 5, 1, 6]
    assert sorted(round_robin_by_chunk(pairs, 6, scores)) == [0, 1, 4, 5, 6, 7]
    # Without scores: input order within a chunk and within a round.
    assert round_robin_by_chunk(pairs, 5) == [0, 4, 5, 7, 1]


def test_curate_end_to_end_keeps_derived_with_their_parent_and_mixes_general():
    pairs = [pair(f"What is the value number {i} of the table?", f"{i * 7} kg", chunk=f"c{i}") for i in range(40)]
    scores = {p.question: (0.5 if i % 4 else 1.5) for i, p in enumerate(pairs)}  # every 4th: IFD ≥ 1

    def derive(selected):
        out = [
            QAPair("hey, " + p.question, p.answer, "colloquial", p.chunk_id, p.source, "paraphrase") for p in selected
        ]
        return out, {"paraphrase": Counter({"duplicate of the original": 2})}

    general = [
        QAPair(f"General prompt {i}?", f"answer {i}", "self_distilled", "", "general", "general") for i in range(50)
    ]
    cfg = SelectConfig(budget=20, diversity="random", general_ratio=0.2, dedup=False, seed=3)
    out = curate(pairs, cfg, score=lambda ps: [scores[p.question] for p in ps], derive=derive, general=general)
    assert out.counts["quality"] == 30 and out.counts["selected"] == 20 and out.counts["derived"] == 20
    assert out.drops["quality"] == Counter({"IFD ≥ 1 (the question does not help)": 10})
    assert out.drops["paraphrase"] == Counter({"duplicate of the original": 2})
    splits = {"train": out.train, "val": out.val, "test": out.test}
    domain = {name: [p for p in ps if p.generator != "general"] for name, ps in splits.items()}
    assert sum(map(len, domain.values())) == 40
    where = {p.chunk_id: name for name, ps in domain.items() for p in ps if p.generator == "extractive"}
    for name, ps in domain.items():  # each paraphrase sits in its parent's split
        assert all(where[p.chunk_id] == name for p in ps if p.generator == "paraphrase")
    n_general = sum(p.generator == "general" for p in out.train)
    assert n_general == round(0.2 * len(domain["train"]) / 0.8) == out.counts["general"]
    assert not any(p.generator == "general" for p in out.val + out.test)
    assert len(domain["train"]) == 32 and len(domain["val"]) == 4 and len(domain["test"]) == 4


def test_group_of_and_mix_in_edges():
    assert group_of(pair("q one two?", "a", chunk=""), "chunk") == "question:q one two?"
    assert group_of(pair("q one two?", "a", source="s.md"), "source") == "s.md"
    train = [pair(f"q {i} x?", "a") for i in range(9)]
    assert mix_in(train, [], 0.5) == train
    assert len(mix_in(train, train[:2], 0.5)) == 11  # only as many general pairs as there are


def test_shipped_general_prompts_load(tmp_path):
    prompts = load_general_prompts()
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "no prompt field"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_general_prompts(bad)
