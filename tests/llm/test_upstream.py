"""The openai-upstream backend against a real upstream: a Hangjia server generating with the tiny model, behind a
second Hangjia server whose `base` it generates. Whatever the front answers, the upstream must have answered itself.

The tiny random model's greedy chat answer is all newlines (trimmed away), so the chat checks sample with a seed:
the same seed gives the same text on both servers."""

from __future__ import annotations

import socket
import threading
import time

import openai
import pytest

from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import ensure_system
from hangjia.llm.backend import Control, GenerationParams
from hangjia.llm.generation import Engine
from hangjia.llm.models import load_tokenizer
from hangjia.llm.upstream import UpstreamBackend
from tests.app.conftest import QUESTION, live_server, sample, wait_for

PROMPT = "Error E24 means"


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def text_of(url: str, **request) -> tuple[list[str], list[str | None], openai.types.CompletionUsage]:
    r = client(url).completions.create(model="base", prompt=PROMPT, max_tokens=16, **request)
    return [c.text for c in r.choices], [c.finish_reason for c in r.choices], r.usage


def chat_of(url: str, **request) -> tuple[list[str], list[str | None], openai.types.CompletionUsage]:
    r = client(url).chat.completions.create(model="base", messages=QUESTION, max_tokens=16, **request)
    return [c.message.content for c in r.choices], [c.finish_reason for c in r.choices], r.usage


def streamed(url: str, chat: bool, **request) -> tuple[str, str | None, openai.types.CompletionUsage]:
    """The joined deltas of one streamed answer, its finish reason and its usage."""
    common = {"model": "base", "max_tokens": 16, "stream": True, "stream_options": {"include_usage": True}}
    if chat:
        chunks = client(url).chat.completions.create(messages=QUESTION, **common, **request)
    else:
        chunks = client(url).completions.create(prompt=PROMPT, **common, **request)
    pieces, finish, usage = [], None, None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            pieces.append((choice.delta.content if chat else choice.text) or "")
            finish = choice.finish_reason or finish
    return "".join(pieces), finish, usage


SAMPLED = {"temperature": 1.0, "seed": 3}


@pytest.mark.parametrize("request_", [{"temperature": 0}, SAMPLED], ids=["greedy", "seeded"])
def test_the_front_answers_what_the_upstream_answers(front_url, upstream_url, request_):
    assert text_of(front_url, **request_) == text_of(upstream_url, **request_)
    assert chat_of(front_url, **request_) == chat_of(upstream_url, **request_)
    texts, finishes, usage = text_of(front_url, **request_)
    assert texts[0] and finishes == ["length"] and usage.completion_tokens == 16 and usage.prompt_tokens > 0


@pytest.mark.parametrize("chat", [False, True], ids=["text", "chat"])
def test_streamed_deltas_join_to_the_answer(front_url, chat):
    answer, finish, usage = streamed(front_url, chat, **SAMPLED)
    texts, finishes, whole = (chat_of if chat else text_of)(front_url, **SAMPLED)
    assert (answer, finish, usage) == (texts[0], finishes[0], whole)
    assert answer


def test_a_stop_string_ends_decoding_early_as_upstream(front_url, upstream_url):
    text = text_of(upstream_url, **SAMPLED)[0][0]
    # Two letters or digits from the middle (the random model also writes partial characters, shown as U+FFFD).
    at = next(
        i for i in range(len(text) // 3, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].isalnum()
    )
    stop = text[at : at + 2]
    stopped = text_of(front_url, stop=[stop], **SAMPLED)
    assert stopped == text_of(upstream_url, stop=[stop], **SAMPLED)
    assert stopped[0] == [text[: text.find(stop)]] and stopped[1] == ["stop"] and stopped[2].completion_tokens < 16
    assert streamed(front_url, False, stop=[stop], **SAMPLED)[:2] == (stopped[0][0], "stop")


def test_a_stop_string_starting_with_whitespace_is_matched_on_the_trimmed_answer(
    front_url, upstream_url, tiny_model_dir
):
    """A chat answer is matched without its leading whitespace (as the transformers backend matches it). The upstream
    matches raw text: sent there, a stop string the raw answer starts with would end it before its first word."""
    tokenizer = load_tokenizer(tiny_model_dir)
    prompt = tokenizer.apply_chat_template(ensure_system(QUESTION), add_generation_prompt=True, tokenize=False)
    for seed in range(40):
        raw = client(upstream_url).completions.create(
            model="base", prompt=prompt, max_tokens=16, temperature=1.0, seed=seed
        )
        raw = raw.choices[0].text
        stop, answer = raw[:1], raw.strip()
        if stop.isspace() and stop in answer:  # e.g. " DW the": stop " " cuts the trimmed answer after "DW"
            break
    else:
        pytest.fail("no seeded answer starts with whitespace and has it inside too")
    request = {"temperature": 1.0, "seed": seed, "stop": [stop]}
    texts, finishes, usage = chat_of(front_url, **request)
    assert (texts, finishes) == chat_of(upstream_url, **request)[:2]
    assert texts == [answer[: answer.find(stop)].rstrip()] and texts[0] and finishes == ["stop"]
    assert usage.completion_tokens < 16
    assert streamed(front_url, True, **request)[:2] == (texts[0], "stop")


def test_several_prompts_and_n_choices(front_url, upstream_url):
    other = "The warranty"
    r = client(front_url).completions.create(model="base", prompt=[PROMPT, other], n=2, max_tokens=8, temperature=0)
    own = client(upstream_url).completions.create(model="base", prompt=[PROMPT, other], max_tokens=8, temperature=0)
    first, second = (c.text for c in own.choices)
    assert [c.text for c in r.choices] == [first, first, second, second]
    assert r.usage.prompt_tokens == own.usage.prompt_tokens  # each prompt counted once
    assert r.usage.completion_tokens == 2 * own.usage.completion_tokens

    # Sampled: row i gets seed + i (as the llama.cpp backend), so the two answers differ and each is reproducible.
    texts, finishes, _ = chat_of(front_url, n=2, **SAMPLED)
    assert texts == [chat_of(upstream_url, **SAMPLED)[0][0], chat_of(upstream_url, temperature=1.0, seed=4)[0][0]]
    assert finishes == ["length", "length"]


LONG = 4000  # minutes of decoding on the tiny model if never stopped


def test_a_client_that_leaves_frees_the_front_and_the_upstream(front_url, upstream_url):
    aborted = {
        url: sample(url, "hangjia:request_success_total", finished_reason="abort") for url in (front_url, upstream_url)
    }
    started = time.monotonic()
    with client(front_url).completions.create(model="base", prompt=PROMPT, max_tokens=LONG, stream=True) as chunks:
        next(iter(chunks))
        assert sample(front_url, "hangjia:num_requests_running") == 1
        assert sample(upstream_url, "hangjia:num_requests_running") == 1
    for url in (front_url, upstream_url):
        assert wait_for(lambda url=url: sample(url, "hangjia:num_requests_running") == 0), f"{url} kept its slot"
        assert wait_for(
            lambda url=url: sample(url, "hangjia:request_success_total", finished_reason="abort") > aborted[url]
        )
    assert time.monotonic() - started < 30


def test_a_cancel_closes_the_upstream_stream(upstream_url):
    backend = UpstreamBackend(f"{upstream_url}/v1", "base")
    try:
        control = Control()
        control.on_step = control.cancel.set  # cancelled as the first piece arrives
        deltas, summary = backend.stream_text(PROMPT, GenerationParams(max_new_tokens=LONG), control)
        pieces = list(deltas)
        assert summary.finish_reason == "abort" and control.steps == 1 and "".join(pieces) == summary.text
        control = Control()
        control.on_step = control.cancel.set
        done = backend.generate_texts([PROMPT, PROMPT], GenerationParams(max_new_tokens=LONG), control)
        assert [c.finish_reason for c in done] == ["abort", "abort"] and control.steps <= 2
        assert wait_for(lambda: sample(upstream_url, "hangjia:num_requests_running") == 0)
    finally:
        backend.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_upstream_is_a_clear_error(tiny_model_dir):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    engine = Engine(tiny_model_dir, backends={"base": UpstreamBackend(dead, "base", max_retries=0)})
    try:
        with live_server(engine) as url:
            started = time.monotonic()
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as caught:
                    client(url).completions.create(model="base", prompt=PROMPT, max_tokens=4, stream=stream)
                assert caught.value.status_code == 502
                assert dead in caught.value.message and "upstream_url" in caught.value.message
            assert time.monotonic() - started < 10
    finally:
        engine.close()


def test_an_upstream_400_stays_a_400_with_its_reason(front_url):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="context"):
            client(front_url).completions.create(model="base", prompt=PROMPT, max_tokens=5000, stream=stream)


def test_an_unknown_upstream_model_names_the_setting(upstream_url):
    backend = UpstreamBackend(f"{upstream_url}/v1", "domain")  # the upstream serves base only
    try:
        with pytest.raises(HangjiaError, match="upstream_models") as caught:
            backend.generate_texts([PROMPT], GenerationParams(max_new_tokens=4))
        assert caught.value.status_code == 502 and upstream_url in caught.value.message
    finally:
        backend.close()


def test_rows_run_concurrently_and_safely_from_many_threads(upstream_url):
    backend = UpstreamBackend(f"{upstream_url}/v1", "base", parallel=4)
    params = GenerationParams(max_new_tokens=8)
    try:
        alone = backend.generate_texts([PROMPT], params)[0]
        results: list = []
        threads = [
            threading.Thread(target=lambda: results.extend(backend.generate_texts([PROMPT] * 3, params)))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 9 and all(r == alone for r in results)
    finally:
        backend.close()
