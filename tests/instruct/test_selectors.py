"""Selection: greedy k-center against a brute-force reference, IFD against a direct unbatched computation,
and grouped splits that never leak a source document across splits."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from hangjia.core.prompts import question_messages
from hangjia.instruct.selectors import grouped_split, ifd_scores, k_center_greedy, one_shot_gains

# k-center -----------------------------------------------------------------------------------------


def naive_k_center(x: np.ndarray, budget: int, first: int) -> list[int]:
    """The same greedy rule, recomputing every row's distance to every chosen centre at each step."""
    unit = [row / np.linalg.norm(row) for row in x]
    chosen = [first]
    while len(chosen) < min(budget, len(x)):
        best, best_d = -1, -1.0
        for i in range(len(x)):
            if i in chosen:
                continue
            d = min(1.0 - float(np.dot(unit[i], unit[c])) for c in chosen)
            if d > best_d:  # strict: the lowest index keeps a tie
                best, best_d = i, d
        chosen.append(best)
    return chosen


def chord_radius(unit: np.ndarray, centres: list[int]) -> float:
    """Largest Euclidean distance from a row to its nearest centre."""
    d = np.linalg.norm(unit[:, None, :] - unit[None, centres, :], axis=-1)
    return float(d.min(axis=1).max())


@pytest.mark.parametrize("seed", range(20))
def test_k_center_matches_naive_greedy(seed):
    rng = np.random.default_rng(seed)
    n, dims = int(rng.integers(2, 30)), int(rng.integers(2, 8))
    x = rng.normal(size=(n, dims)) * rng.uniform(0.1, 10, size=(n, 1))  # row scale must not matter
    budget = int(rng.integers(1, n + 1))
    first = int(rng.integers(0, n))
    assert k_center_greedy(x, budget, first=first) == naive_k_center(x, budget, first)
    default = k_center_greedy(x, budget)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert default[0] == int(np.argmax(unit @ unit.mean(axis=0)))
    assert default == naive_k_center(x, budget, default[0])


@pytest.mark.parametrize("seed", range(30))
def test_k_center_radius_within_twice_optimal(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(4, 11)), int(rng.integers(1, 4))
    x = rng.normal(size=(n, 3))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    optimal = min(chord_radius(unit, list(s)) for s in itertools.combinations(range(n), k))
    for first in range(n):  # the guarantee holds from any starting point
        assert chord_radius(unit, k_center_greedy(x, k, first=first)) <= 2 * optimal + 1e-9


def test_k_center_edge_cases():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    everything = k_center_greedy(x, 10, first=0)
    assert sorted(everything) == [0, 1, 2, 3] and everything[:2] == [0, 3]
    # Duplicates are picked last, each once, even though every remaining distance is 0.
    assert k_center_greedy(np.ones((4, 3)), 4, first=2) == [2, 0, 1, 3]
    assert k_center_greedy(x, 0) == [] and k_center_greedy(np.zeros((0, 2)), 3) == []
    with pytest.raises(ValueError, match="row index"):
        k_center_greedy(x, 2, first=4)


# IFD ----------------------------------------------------------------------------------------------

PAIRS = [
    ("How often should the filter be cleaned?", "Every two weeks."),
    ("What is the rated power?", "2,400 W"),
    ("Which programme is the quickest?", "The 30-minute quick wash, for lightly soiled loads only."),
    ("Where is the micro filter?", "Under the lower basket."),
    ("Is it safe to open the door mid-cycle?", ""),
    ("What does error E24 mean?", "The drain pump is blocked; clean the filter and restart the programme."),
    ("Max load?", "13 place settings"),
    ("What voltage does it need?", "220-240 V at 50 Hz"),
    ("How long is the warranty?", "Two years from the date of purchase."),
    ("Which detergent should I use?", "Any dishwasher tablet or powder; never hand-washing liquid."),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def direct_ifd(model, tokenizer, question: str, answer: str) -> float:
    """One pair by hand: one forward pass per condition, cross-entropy over exactly the answer positions."""
    import torch
    import torch.nn.functional as F

    prompt_text = tokenizer.apply_chat_template(question_messages(question), add_generation_prompt=True, tokenize=False)
    prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def loss(context: list[int]) -> float:
        ids = torch.tensor([context + answer_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        positions = torch.arange(len(context) - 1, ids.shape[1] - 1)  # logits that predict the answer tokens
        return F.cross_entropy(logits[positions], ids[0, positions + 1]).item()

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return loss(prompt) / loss([start])


def test_ifd_matches_direct_computation(tiny):
    model, tokenizer = tiny
    model.eval()
    scores = ifd_scores(model, tokenizer, PAIRS, batch_size=4)
    expected = [direct_ifd(model, tokenizer, q, a) for q, a in PAIRS]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert all(np.isfinite(scores)) and all(s > 0 for s in scores)


def test_ifd_does_not_depend_on_batching(tiny):
    model, tokenizer = tiny
    model.train()
    one = ifd_scores(model, tokenizer, PAIRS, batch_size=1)
    assert model.training  # the caller's mode is restored
    assert ifd_scores(model, tokenizer, PAIRS, batch_size=8) == pytest.approx(one, abs=1e-5)
    assert ifd_scores(model, tokenizer, []) == []


# Nuggets one-shot gain ----------------------------------------------------------------------------


def direct_answer_loss(model, tokenizer, messages: list[dict[str, str]], answer: str) -> float:
    import torch
    import torch.nn.functional as F

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    context = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    positions = torch.arange(len(context) - 1, ids.shape[1] - 1)
    return F.cross_entropy(logits[positions], ids[0, positions + 1]).item()


def test_one_shot_gain_matches_direct_computation(tiny):
    model, tokenizer = tiny
    model.eval()
    candidates, anchors = PAIRS[:5], PAIRS[3:8]  # two candidates are anchors too: skipped on themselves
    gains = one_shot_gains(model, tokenizer, candidates, anchors, batch_size=3)
    expected = []
    for cq, ca in candidates:
        wins = tries = 0
        for aq, aa in anchors:
            if (cq, ca) == (aq, aa):
                continue
            zero = direct_answer_loss(model, tokenizer, question_messages(aq), aa)
            shot = question_messages(aq)
            shot[1:1] = [{"role": "user", "content": cq}, {"role": "assistant", "content": ca}]
            one = direct_answer_loss(model, tokenizer, shot, aa)
            tries, wins = tries + 1, wins + (one < zero)
        expected.append(wins / tries)
    assert gains == pytest.approx(expected)
    assert len(set(gains)) > 1  # the scores discriminate on this random model, so the comparison means something
    assert one_shot_gains(model, tokenizer, [], anchors) == []


# grouped split ------------------------------------------------------------------------------------


def make_items(seed: int, groups: int = 40) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for g in range(groups):
        items += [{"source": f"doc{g}.md", "question": f"q{g}-{i}"} for i in range(int(rng.integers(1, 6)))]
    rng.shuffle(items)  # a group's pairs need not be next to each other
    return items


@pytest.mark.parametrize("seed", range(10))
def test_grouped_split_keeps_groups_whole_and_sizes_close(seed):
    items = make_items(seed)
    splits = grouped_split(items, seed=seed)
    assert sorted(q for s in splits for q in (i["question"] for i in s)) == sorted(i["question"] for i in items)
    seen = [{i["source"] for i in s} for s in splits]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    largest = max(Counter(i["source"] for i in items).values())
    for split, fraction in zip(splits, (0.8, 0.1, 0.1), strict=True):
        assert abs(len(split) - fraction * len(items)) < largest
    for split in splits:  # input order kept within a split
        positions = [items.index(i) for i in split]
        assert positions == sorted(positions)


def test_grouped_split_is_deterministic_per_seed():
    items = make_items(0)
    assert grouped_split(items, seed=3) == grouped_split(items, seed=3)

    def assignment(seed: int) -> dict[str, int]:
        return {i["source"]: k for k, s in enumerate(grouped_split(items, seed=seed)) for i in s}

    assert assignment(0) != assignment(1)


def test_grouped_split_other_key_and_bad_input():
    items = [{"chunk_id": f"c{i % 5}", "n": i} for i in range(50)]
    train, val, test = grouped_split(items, key="chunk_id", fractions=(0.6, 0.2, 0.2))
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    with pytest.raises(ValueError, match="no 'source' field"):
        grouped_split(items)
    with pytest.raises(ValueError, match="three non-negative"):
        grouped_split(items, key="chunk_id", fractions=(0.9, 0.1))
