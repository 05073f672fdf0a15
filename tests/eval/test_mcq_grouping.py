"""loglikelihoods shares one forward row among requests with the same inputs and projects only target positions;
both must leave every score as a one-request-at-a-time, full-logits pass computes it."""

from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from hangjia.eval.mcq import evaluate_mcq, load_mcq_jsonl, loglikelihoods, prompt

KESTREL = Path(__file__).parents[2] / "examples/kestrel"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random Llama whose tokenizer, like SmolLM2's, has " A".." D" as single tokens."""
    docs = [p.read_text(encoding="utf-8") for p in sorted((KESTREL / "docs").iterdir())]
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
    """Counts the rows the model is run on (a forward pre-hook)."""

    def __init__(self, model):
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        self.rows += kwargs["input_ids"].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


class NoLogitsToKeep(torch.nn.Module):
    """The tiny model behind a forward without `logits_to_keep`, as an older or custom model has."""

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
