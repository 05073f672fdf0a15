"""loglikelihoods shares one forward row among requests with the same inputs, runs a prefix that rows share once,
and projects only target positions; all three must leave every score as a one-request-at-a-time, full-logits pass
computes it."""

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hangjia.eval.mcq import (
    MIN_SHARED,
    batch_bounds,
    evaluate_mcq,
    load_mcq_jsonl,
    loglikelihoods,
    prefix_groups,
    prompt,
)
from tests.paths import KESTREL, KESTREL_DOCS
from tests.tiny_models import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama whose tokenizer, like SmolLM2's, has " A".." D" as single tokens."""
    docs = [p.read_text(encoding="utf-8") for p in sorted(KESTREL_DOCS.iterdir())]
    path = build_tiny_model(
        tmp_path_factory.mktemp("tiny-mcq"), docs + ["Answer: A\nAnswer: B\nAnswer: C\nAnswer: D\n"] * 100
    )
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def items():
    return load_mcq_jsonl(KESTREL / "mcq.jsonl")[:6]


def full_pass(model, tokenizer, context: str, continuation: str) -> float:
    """One unpadded forward pass with every position's logits, summed over the continuation's positions."""
    context_enc = tokenizer.encode(context, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), dim=-1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_enc), len(whole)))


class RowCounter:
    """Counts the rows the model is scored on, and apart from them the runs of a shared prefix (the calls that ask
    for a cache) and the token positions of all calls (a forward pre-hook)."""

    def __init__(self, model):
        self.rows = self.prefix_runs = self.positions = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.positions += kwargs["input_ids"].numel()
        if kwargs.get("use_cache"):
            self.prefix_runs += kwargs["input_ids"].shape[0]
        else:
            self.rows += kwargs["input_ids"].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class NoLogitsToKeep(torch.nn.Module):
    """The tiny model behind a forward without `logits_to_keep` or a cache argument, as an older or custom model has."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.config = model.config

    @property
    def device(self):
        return self.inner.device

    def forward(self, input_ids, attention_mask):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def letter_and_text_requests(items) -> list[tuple[str, str]]:
    requests = []
    for item in items:
        context = prompt(item)
        requests += [(context, f" {letter}") for letter in "ABCD"] + [(context, f" {c}") for c in item.choices]
    return requests


def test_letters_after_answer_are_one_token(tiny, items):
    # The one-row-per-question assertions below rely on it.
    _, tokenizer = tiny
    context = prompt(items[0])
    base = tokenizer.encode(context, add_special_tokens=False)
    for letter in "ABCD":
        assert len(tokenizer.encode(context + f" {letter}", add_special_tokens=False)) == len(base) + 1


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_grouped_scores_equal_one_full_pass_per_request(tiny, items, batch_size):
    model, tokenizer = tiny
    requests = letter_and_text_requests(items) + [("Warranty:", " 24 months"), ("E24", " means a blocked pump")]
    grouped = loglikelihoods(model, tokenizer, requests, batch_size=batch_size)
    reference = [full_pass(model, tokenizer, c, x) for c, x in requests]
    assert grouped == pytest.approx(reference, abs=1e-5)


def test_letters_of_one_question_share_one_row(tiny, items):
    model, tokenizer = tiny
    requests = [(prompt(item), f" {letter}") for item in items for letter in "ABCD"]
    with RowCounter(model) as counter:
        grouped = loglikelihoods(model, tokenizer, requests, batch_size=4)
    assert counter.rows == len(items)
    one_by_one = [loglikelihoods(model, tokenizer, [r], batch_size=1)[0] for r in requests]
    assert grouped == pytest.approx(one_by_one, abs=1e-5)


def test_a_model_without_logits_to_keep_scores_the_same(tiny, items):
    model, tokenizer = tiny
    requests = letter_and_text_requests(items[:3])
    kept = loglikelihoods(model, tokenizer, requests, batch_size=3)
    full = loglikelihoods(NoLogitsToKeep(model), tokenizer, requests, batch_size=3)
    assert kept == pytest.approx(full, abs=1e-5)


def test_evaluate_mcq_without_norm_scores_only_the_letters(tiny, items):
    model, tokenizer = tiny
    both = evaluate_mcq(model, tokenizer, items, batch_size=4)
    with RowCounter(model) as counter:
        letters = evaluate_mcq(model, tokenizer, items, batch_size=4, norm=False)
    assert counter.rows == len(items)
    assert letters["acc"] == both["acc"] and letters["n"] == both["n"] == len(items)
    assert letters["acc_norm"] is None and both["acc_norm"] is not None
    for row, ref in zip(letters["per_item"], both["per_item"], strict=True):
        assert row["pred"] == ref["pred"] and row["correct"] == ref["correct"]
        assert row["loglikelihoods"] == pytest.approx(ref["loglikelihoods"], abs=1e-5)
        assert row["pred_norm"] is row["correct_norm"] is row["loglikelihoods_norm"] is None


def projected_positions(model, run) -> int:
    """How many (row, position) pairs `run()` projects onto the vocabulary (a hook on the output layer)."""
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda m, a, out: seen.append(out.shape[0] * out.shape[1])
    )
    try:
        run()
    finally:
        handle.remove()
    return sum(seen)


def test_only_target_positions_are_projected(tiny, items):
    model, tokenizer = tiny
    requests = [(prompt(item), f" {letter}") for item in items for letter in "ABCD"]
    # One row per question; the rows' lengths differ, so the window from the shortest row's target is a bit wider.
    n = projected_positions(model, lambda: loglikelihoods(model, tokenizer, requests, batch_size=len(items)))
    longest = max(len(tokenizer.encode(prompt(item), add_special_tokens=False)) for item in items)
    assert len(items) <= n < len(items) * longest // 2


def test_a_peft_model_projects_only_target_positions_too(tiny, items):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = tiny
    requests = letter_and_text_requests(items[:2])
    plain = loglikelihoods(model, tokenizer, requests, batch_size=4)
    kept = projected_positions(model, lambda: loglikelihoods(model, tokenizer, requests, batch_size=4))
    # A fresh LoRA adapter starts as a no-op (B = 0), so the scores must not move.
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    try:
        scores = []
        n = projected_positions(lora, lambda: scores.extend(loglikelihoods(lora, tokenizer, requests, batch_size=4)))
        assert n == kept
        assert scores == pytest.approx(plain, abs=1e-5)
    finally:
        lora.unload()


@pytest.fixture(scope="module")
def mmlu_like(items):
    """Items of two subjects, each prompt opening with its subject's header and two solved questions."""
    subjects = ["kestrel dishwashers", "kestrel ovens"]
    tagged = [replace(item, subject=subjects[n % 2]) for n, item in enumerate(items)]
    extra = load_mcq_jsonl(KESTREL / "mcq.jsonl")[6:10]
    dev = [replace(item, id=f"dev:{item.id}", subject=subjects[n % 2]) for n, item in enumerate(extra)]
    return tagged, dev


@pytest.mark.parametrize("batch_size", [1, 2, 8])
@pytest.mark.parametrize("shots", [0, 2])
def test_rows_sharing_a_header_and_shots_score_as_full_passes(tiny, mmlu_like, batch_size, shots):
    from hangjia.eval.mcq import shots_for

    model, tokenizer = tiny
    items, dev = mmlu_like
    requests = []
    for item in items:
        context = prompt(item, shots_for(item, shots, dev))
        requests += [(context, f" {letter}") for letter in "ABCD"] + [(context, f" {c}") for c in item.choices]
    shared = loglikelihoods(model, tokenizer, requests, batch_size=batch_size)
    reference = [full_pass(model, tokenizer, c, x) for c, x in requests]
    assert shared == pytest.approx(reference, abs=1e-5)


def test_a_shared_prefix_is_run_once_per_group(tiny, mmlu_like):
    from hangjia.eval.mcq import shots_for

    model, tokenizer = tiny
    items, dev = mmlu_like
    requests = [(prompt(item, shots_for(item, 2, dev)), f" {letter}") for item in items for letter in "ABCD"]
    with RowCounter(model) as shared:
        scores = loglikelihoods(model, tokenizer, requests, batch_size=8)
    with RowCounter(model) as whole:
        plain = loglikelihoods(NoLogitsToKeep(model), tokenizer, requests, batch_size=8)
    assert scores == pytest.approx(plain, abs=1e-5)
    # One row per question either way; one prefix run per subject, none without a cache argument.
    assert shared.rows == whole.rows == len(items)
    assert (shared.prefix_runs, whole.prefix_runs) == (2, 0)
    # Header and shots are most of each prompt, so running them once per subject saves most positions.
    header_and_shots = [
        len(tokenizer.encode(prompt(replace(item, question="", choices=[""] * 4), shots_for(item, 2, dev))))
        for item in items[:2]
    ]
    assert shared.positions < whole.positions - (len(items) - 2) * min(header_and_shots) // 2


def test_prefix_groups_split_by_subject_and_keep_the_rest_together():
    header_a, header_b = tuple(range(100, 120)), tuple(range(200, 220))
    a_rows = [header_a + (n, n + 1) for n in range(5)]
    b_rows = [header_b + (n, 7) for n in range(3)]
    loners = [(1, 2, 3), (1, 2, 4, 5), (9,)]  # a 2-token common prefix is not worth a run of its own
    groups = prefix_groups(a_rows + b_rows + loners + a_rows[:1])
    assert sorted(map(sorted, groups)) == sorted([sorted(a_rows), sorted(b_rows), sorted(loners)])
    assert sorted(groups[-1]) == sorted(loners)
    assert MIN_SHARED > 2


def every_cut(n: int, batch_size: int):
    """All ways to cut n rows into consecutive batches of 1..batch_size rows, as bounds."""
    if n == 0:
        yield [0]
        return
    for last in range(1, min(batch_size, n) + 1):
        for bounds in every_cut(n - last, batch_size):
            yield [*bounds, n]


def positions(widths, bounds, overhead):
    return sum((b - a) * widths[a] + overhead for a, b in zip(bounds, bounds[1:], strict=False))


@pytest.mark.parametrize("overhead", [0, 5, 12, 1000])
def test_batch_bounds_find_the_cheapest_cut(overhead):
    import random

    rng = random.Random(overhead)
    for _ in range(30):
        n, batch_size = rng.randint(1, 9), rng.randint(1, 4)
        widths = sorted((rng.randint(1, 60) for _ in range(n)), reverse=True)
        bounds = batch_bounds(widths, batch_size, overhead)
        assert bounds[0] == 0 and bounds[-1] == n
        assert all(0 < b - a <= batch_size for a, b in zip(bounds, bounds[1:], strict=False))
        cheapest = min(positions(widths, cut, overhead) for cut in every_cut(n, batch_size))
        assert positions(widths, bounds, overhead) == cheapest


def test_batch_bounds_end_a_batch_at_a_drop_in_length():
    # Two long rows and six short: fixed batches of 4 would pad two short rows to 100; the cut after the long rows
    # saves that padding for one more call (how the six short rows are split in two costs the same either way).
    widths = [100, 100, 10, 10, 10, 10, 10, 10]
    assert batch_bounds(widths, 4, overhead=12)[:2] == [0, 2]
    assert positions(widths, batch_bounds(widths, 4, overhead=12), 12) == positions(widths, [0, 4, 8], 12) - 180 + 12
    assert batch_bounds(widths, 8, overhead=12) == [0, 2, 8]
    # Where a call costs more than the padding it saves, the rows stay in the fewest batches.
    assert batch_bounds(widths, 8, overhead=1000) == [0, 8]
    assert batch_bounds([], 8) == [0]


def test_a_prefix_tuned_model_is_never_handed_a_cache(tiny, items):
    from peft import PrefixTuningConfig, get_peft_model

    model, tokenizer = tiny
    # Prompt learning wraps the model without changing its modules, so the shared fixture stays as it was.
    tuned = get_peft_model(model, PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    requests = letter_and_text_requests(items[:2])  # each question's rows share its whole prompt
    scores = loglikelihoods(tuned, tokenizer, requests, batch_size=4)
    one_by_one = [loglikelihoods(tuned, tokenizer, [r], batch_size=1)[0] for r in requests]
    assert scores == pytest.approx(one_by_one, abs=1e-5)
