"""Sliding-window perplexity against a direct single forward pass on a tiny random Llama."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hangjia.eval.perplexity import negative_log_likelihood, perplexity, windows

SHORT = "Error E24 means that the drain pump is blocked; clean the filter and restart the programme."
LONG = " ".join(
    [
        "The Thermora 12 heat pump reports fault P01 when the water flow through the plate exchanger is too low.",
        "Check that the strainer is clean, that all valves are open and that the circulation pump runs.",
        "If the fault returns within a day, call a service centre and quote the serial number on the rating plate.",
    ]
)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def direct_nll(model, tokenizer, text: str, start_token: bool = True) -> tuple[float, int]:
    """One forward pass over the whole text; every token after the first input is a target."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if start_token:
        ids = [tokenizer.bos_token_id, *ids]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return -sum(logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))), len(ids) - 1


@pytest.mark.parametrize(
    ("length", "max_length", "stride"), [(1, 8, 4), (8, 8, 4), (9, 8, 4), (100, 16, 8), (100, 16, 15), (37, 10, 1)]
)
def test_windows_score_every_token_once_with_enough_context(length, max_length, stride):
    spans = windows(length, max_length, stride)
    targets = [t for _, end, first in spans for t in range(first, end)]
    assert targets == list(range(1, length))
    for n, (begin, end, first) in enumerate(spans):
        assert end - begin <= max_length
        assert first - begin >= (1 if n == 0 else max_length - stride)


def test_stride_must_leave_overlap():
    with pytest.raises(ValueError, match="stride"):
        windows(100, 16, 16)


def test_equals_direct_computation_when_the_text_fits_one_window(tiny):
    model, tokenizer = tiny
    nll, n = direct_nll(model, tokenizer, SHORT)
    assert n > 10
    assert negative_log_likelihood(model, tokenizer, [SHORT]) == pytest.approx((nll, n), rel=1e-5)
    assert perplexity(model, tokenizer, [SHORT]) == pytest.approx(math.exp(nll / n), rel=1e-5)
    # Without a start token the first text token has no context and is not scored.
    no_start = direct_nll(model, tokenizer, SHORT, start_token=False)
    got = negative_log_likelihood(model, tokenizer, [SHORT], add_start_token=False)
    assert got == pytest.approx(no_start, rel=1e-5)


def test_texts_are_weighted_by_their_tokens_and_batching_changes_nothing(tiny):
    model, tokenizer = tiny
    (a, na), (b, nb) = direct_nll(model, tokenizer, SHORT), direct_nll(model, tokenizer, LONG)
    expected = math.exp((a + b) / (na + nb))  # not the mean of the two perplexities
    assert expected != pytest.approx((math.exp(a / na) + math.exp(b / nb)) / 2, rel=1e-4)
    for batch_size in (1, 2, 4):
        got = perplexity(model, tokenizer, [SHORT, "", LONG], batch_size=batch_size)
        assert got == pytest.approx(expected, rel=1e-5)


def test_sliding_window_is_close_to_direct_when_the_text_does_not_fit(tiny):
    model, tokenizer = tiny
    nll, n = direct_nll(model, tokenizer, LONG)
    assert n > 64
    windowed, count = negative_log_likelihood(model, tokenizer, [LONG], max_length=32, stride=16, batch_size=3)
    assert count == n  # every token scored exactly once
    assert windowed != pytest.approx(nll, rel=1e-7)  # later tokens saw at most 31 tokens of context, not all
    assert math.exp(windowed / n) == pytest.approx(math.exp(nll / n), rel=0.05)


def test_max_length_beyond_the_models_context_and_empty_texts_raise(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="context"):
        perplexity(model, tokenizer, [SHORT], max_length=10_000, stride=256)
    with pytest.raises(ValueError, match="no tokens"):
        perplexity(model, tokenizer, ["", ""], add_start_token=False)
