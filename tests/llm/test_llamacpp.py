"""The llama.cpp backend over a real GGUF of the tiny random Llama: batched decoding gives what one-at-a-time gives."""

from __future__ import annotations

import threading
import time

import pytest

from hangjia.core.errors import HangjiaError
from hangjia.llm.backend import Control, GenerationParams
from hangjia.llm.llamacpp import LlamaCppBackend
from hangjia.llm.models import load_tokenizer
from hangjia.train.export import to_gguf

QUESTIONS = [
    "How do I reset the DW4500 dishwasher?",
    "What does error E24 mean?",
    "How long is the warranty on the compressor?",
    "Where is the nearest service centre?",
    "Which detergent should I use?",
]


@pytest.fixture(scope="module")
def gguf(tiny_smollm_dir, tmp_path_factory):
    return to_gguf(tiny_smollm_dir, tmp_path_factory.mktemp("gguf") / "tiny-f16.gguf", "f16")


@pytest.fixture(scope="module")
def prompts(tiny_smollm_dir):
    tokenizer = load_tokenizer(tiny_smollm_dir)
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        for q in QUESTIONS
    ]


@pytest.fixture(scope="module")
def backend(gguf):
    backend = LlamaCppBackend(gguf, parallel=3, context=256, prefill_chunk=8)
    yield backend
    backend.close()


GREEDY = GenerationParams(max_new_tokens=12)


def test_batched_greedy_equals_one_at_a_time(backend, prompts):
    alone = [backend.generate_texts([p], GREEDY)[0] for p in prompts]
    # Five prompts over three slots, read 8 tokens per step beside the decoding ones: queued, joined mid-flight.
    together = backend.generate_texts(prompts, GREEDY)
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    assert all(c.completion_tokens > 0 and c.prompt_tokens > 8 for c in together)


def test_requests_joining_a_running_batch_get_their_own_answers(backend, prompts):
    alone = {p: backend.generate_texts([p], GREEDY)[0].text for p in prompts}
    got: dict[str, str] = {}

    def ask(prompt: str, delay: float) -> None:
        time.sleep(delay)
        got[prompt] = backend.generate_texts([prompt], GREEDY)[0].text

    threads = [threading.Thread(target=ask, args=(p, i * 0.01)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == alone


def test_stream_joins_to_the_answer(backend, prompts):
    whole = backend.generate_texts([prompts[0]], GREEDY, trim=True)[0]
    deltas, summary = backend.stream_text(prompts[0], GREEDY, trim=True)
    assert "".join(deltas).strip() == whole.text
    assert (summary.text, summary.completion_tokens, summary.finish_reason) == (
        whole.text,
        whole.completion_tokens,
        whole.finish_reason,
    )


def test_a_stop_string_ends_decoding(backend, prompts):
    whole = backend.generate_texts([prompts[1]], GenerationParams(max_new_tokens=24))[0]
    assert whole.completion_tokens >= 4, "the tiny model should talk for a few tokens"
    stop = whole.text[len(whole.text) // 3 : len(whole.text) // 3 + 2]
    stopped = backend.generate_texts([prompts[1]], GenerationParams(max_new_tokens=24, stop=[stop]))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < whole.completion_tokens
    assert stop in stopped.text


def test_cap_and_cancel(backend, prompts):
    capped = backend.generate_texts([prompts[2]], GenerationParams(max_new_tokens=3))[0]
    assert (capped.completion_tokens, capped.finish_reason) == (3, "length")
    control = Control()
    deltas, summary = backend.stream_text(prompts[2], GenerationParams(max_new_tokens=200), control)
    for i, _ in enumerate(deltas):
        if i == 1:
            control.cancel.set()
    assert summary.finish_reason == "abort"
    assert summary.completion_tokens < 200
    assert control.steps == summary.completion_tokens
    # Its slot is free again: three more run at once.
    assert len(backend.generate_texts(prompts[:3], GenerationParams(max_new_tokens=2))) == 3


def test_seeded_sampling_repeats_and_rows_differ(backend, prompts):
    params = GenerationParams(max_new_tokens=16, temperature=20.0, seed=7)  # flat enough to leave the chain
    first = backend.generate_texts([prompts[3]] * 2, params)
    again = backend.generate_texts([prompts[3]] * 2, params)
    assert [c.text for c in first] == [c.text for c in again]
    assert first[0].text != first[1].text


def test_too_long_a_prompt_is_a_400(backend):
    with pytest.raises(HangjiaError, match="holds 256") as err:
        backend.generate_texts(["word " * 300], GREEDY)
    assert err.value.status_code == 400


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(HangjiaError, match="hangjia export"):
        LlamaCppBackend(tmp_path / "none.gguf")
