"""The response cache: a repeated greedy request is answered again without generating; anything that changes the
answer (the request, the model's files, the index) misses; counted in /metrics."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from hangjia.app.cache import Answer, Entry, ResponseCache
from hangjia.app.metrics import Metrics
from hangjia.app.schemas import Usage
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.index import BM25Index
from hangjia.llm.generation import Engine
from tests.app.conftest import QUESTION, live_server, make_index, sample, wait_for
from tests.app.test_admission import hold_slot
from tests.app.test_openai_api import make_adapter


@pytest.fixture(scope="module")
def parts(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A LoRA adapter (for `domain`) and the folder of a three-chunk index."""
    tmp = tmp_path_factory.mktemp("cache")
    return make_adapter(tiny_model_dir, tmp / "adapter"), tmp / "index"


def serving(engine: Engine, **settings):
    """live_server with the cache on (the other server tests turn it off)."""
    return live_server(engine, **{"cache_size": 64, **settings})


@pytest.fixture(scope="module")
def url(tiny_model_dir, parts) -> Iterator[str]:
    adapter, index = parts
    with serving(Engine(tiny_model_dir, adapter, make_index(index))) as base_url:
        yield base_url


def client_of(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def ask(url: str, model: str = "domain", **kwargs):
    kwargs = {"messages": QUESTION, "temperature": 0, "max_tokens": 8, "extra_body": {"rag": False}} | kwargs
    return client_of(url).chat.completions.create(model=model, **kwargs)


class Counts:
    """The cache's counters and the token counters of one model, read before and after some requests."""

    NAMES = {
        "queries": ("hangjia:response_cache_queries_total", {}),
        "hits": ("hangjia:response_cache_hits_total", {}),
        "entries": ("hangjia:response_cache_entries", {}),
        "cached": ("hangjia:request_success_total", {"finished_reason": "cached"}),
        "prompt": ("hangjia:prompt_tokens_total", {}),
        "generated": ("hangjia:generation_tokens_total", {}),
    }

    def __init__(self, url: str, model: str = "domain"):
        self.url, self.model = url, model
        self.before = self.read()

    def read(self) -> dict[str, float]:
        return {k: sample(self.url, n, model_name=self.model, **labels) for k, (n, labels) in self.NAMES.items()}

    def grew(self) -> dict[str, float]:
        now = self.read()
        return {k: now[k] - self.before[k] for k in now if now[k] != self.before[k]}


def test_a_repeated_greedy_request_is_answered_from_the_cache_without_generating(url):
    counts = Counts(url)
    first = ask(url)
    assert counts.grew() == {
        "queries": 1,
        "entries": 1,
        "prompt": first.usage.prompt_tokens,
        "generated": first.usage.completion_tokens,
    }
    counts = Counts(url)
    second = ask(url)
    assert counts.grew() == {"queries": 1, "hits": 1, "cached": 1}  # no tokens: nothing was processed
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.choices[0].finish_reason == first.choices[0].finish_reason
    assert second.usage == first.usage  # what the answer cost when it was generated
    assert second.id != first.id and second.model == "domain"
    text = client_of(url).completions.create(model="base", prompt="Error E24 means", max_tokens=6, temperature=0)
    counts = Counts(url, "base")
    again = client_of(url).completions.create(model="base", prompt="Error E24 means", max_tokens=6, temperature=0)
    assert counts.grew() == {"queries": 1, "hits": 1, "cached": 1}
    assert [c.text for c in again.choices] == [c.text for c in text.choices] and again.usage == text.usage


def test_whatever_shapes_the_answer_is_in_the_key(url):
    ask(url, max_tokens=6)
    variants = [
        {"messages": [{"role": "user", "content": "How do I reset the DW4500 dishwasher? Quickly."}]},
        {"seed": 7},
        {"max_tokens": 5},
        {"extra_body": {"rag": True}},
        {"extra_body": {"rag": True, "guard": False}},
        {"stop": ["zz"]},
        {"n": 2},
        {"top_p": 0.5},
    ]
    counts = Counts(url)
    for variant in variants:
        ask(url, **{"max_tokens": 6, **variant})
    assert counts.grew()["queries"] == len(variants) and "hits" not in counts.grew()
    base = Counts(url, "base")
    ask(url, "base", max_tokens=6)  # another model: another key
    assert "hits" not in base.grew()
    counts = Counts(url)
    for variant in variants:
        ask(url, **{"max_tokens": 6, **variant})
    assert counts.grew()["hits"] == len(variants)


def test_sampled_requests_are_never_looked_up(url):
    counts = Counts(url)
    first, second = (ask(url, temperature=0.8, seed=3) for _ in range(2))
    assert first.choices[0].message.content == second.choices[0].message.content  # seeded, yet generated twice
    assert "queries" not in counts.grew() and counts.grew()["generated"] > 0
    counts = Counts(url)
    ask(url, temperature=None)  # OpenAI's default temperature is 1: sampled
    assert "queries" not in counts.grew()


def events(url: str, path: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{url}/v1/{path}", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_streamed_hit_sends_the_cached_answer_in_one_piece_with_the_same_fields(url):
    body = {"model": "domain", "messages": QUESTION, "max_tokens": 10, "temperature": 0, "rag": True}
    body["stream_options"] = {"include_usage": True}
    counts = Counts(url)
    generated = events(url, "chat/completions", body)  # a stream fills the cache too
    streamed = events(url, "chat/completions", body)
    assert counts.grew()["hits"] == 1
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in generated if e["choices"])
    pieces = [e["choices"][0]["delta"].get("content") for e in streamed if e["choices"]]
    assert pieces == ["", *([text] if text else []), None]  # role, the whole answer, the finish reason
    for fresh, cached in [(generated[0], streamed[0]), (generated[-2], streamed[-2]), (generated[-1], streamed[-1])]:
        assert {**fresh, "id": None, "created": None} == {**cached, "id": None, "created": None}
    assert streamed[0]["citations"] and all(c["cited"] is None for c in streamed[0]["citations"])
    assert streamed[-2]["choices"][0]["finish_reason"] in {"stop", "length"} and "guard" in streamed[-2]
    assert streamed[-1]["usage"]["completion_tokens"] > 0
    plain = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False}, timeout=60).json()
    assert counts.grew()["hits"] == 2
    assert plain["citations"] == streamed[-2]["citations"] and plain["usage"] == streamed[-1]["usage"]
    verdict = streamed[-2]["guard"]
    assert plain["choices"][0]["message"]["content"] == (text if verdict["passed"] else verdict["reply"])
    base = Counts(url, "base")
    completion = {"model": "base", "prompt": "Error E24", "max_tokens": 6, "temperature": 0}
    fresh, cached = events(url, "completions", completion), events(url, "completions", completion)
    assert base.grew()["hits"] == 1
    assert "".join(e["choices"][0]["text"] for e in fresh) == "".join(e["choices"][0]["text"] for e in cached)


def test_a_rebuilt_index_misses_unless_it_holds_the_same_chunks(tiny_model_dir, tmp_path):
    engine = Engine(tiny_model_dir, index=make_index(tmp_path / "index"))
    with serving(engine) as base_url:
        counts = Counts(base_url, "base")
        ask(base_url, "base", extra_body={"rag": True})
        ask(base_url, "base", extra_body={"rag": True})
        assert counts.grew()["hits"] == 1
        engine.index = make_index(tmp_path / "same")  # rebuilt into the very same chunks
        ask(base_url, "base", extra_body={"rag": True})
        assert counts.grew()["hits"] == 2
        text = "Error E24 means the drain hose is kinked; straighten it and reset the DW4500."
        engine.index = BM25Index.build([*engine.index.chunks[1:], Chunk("c9", "errors.md", "Main", 0, len(text), text)])
        ask(base_url, "base", extra_body={"rag": True})
        assert counts.grew()["hits"] == 2
        ask(base_url, "base", extra_body={"rag": False})
        ask(base_url, "base", extra_body={"rag": False})
        assert counts.grew()["hits"] == 3  # without rag the index is not in the key


def test_a_rewritten_adapter_is_a_new_version_and_misses(tiny_model_dir, parts, tmp_path):
    adapter = shutil.copytree(parts[0], tmp_path / "adapter")
    with serving(Engine(tiny_model_dir, adapter)) as base_url:
        for model in ("domain", "base"):
            ask(base_url, model)
        domain, base = Counts(base_url), Counts(base_url, "base")
        weights = adapter / "adapter_model.safetensors"
        stat = weights.stat()
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # as a retrained adapter would be
        for model in ("domain", "base"):
            ask(base_url, model)
        assert "hits" not in domain.grew() and domain.grew()["generated"] > 0
        assert base.grew()["hits"] == 1  # the base model's files did not change
        ask(base_url)
        assert domain.grew()["hits"] == 1


def test_cache_size_0_turns_the_cache_off(tiny_model_dir):
    with serving(Engine(tiny_model_dir), cache_size=0) as base_url:
        counts = Counts(base_url, "base")
        first, second = ask(base_url, "base"), ask(base_url, "base")
        grew = counts.grew()
        assert "queries" not in grew and "hits" not in grew and "entries" not in grew
        assert grew["generated"] == first.usage.completion_tokens + second.usage.completion_tokens


def test_the_least_recently_used_answer_goes_first(tiny_model_dir):
    def question(word: str) -> list[dict]:
        return [{"role": "user", "content": f"What does {word} mean?"}]

    with serving(Engine(tiny_model_dir), cache_size=2) as base_url:
        for word in ("E24", "E15", "E24", "E09"):  # E24 is used again, so E15 is the oldest when E09 comes
            ask(base_url, "base", messages=question(word), max_tokens=4)
        counts = Counts(base_url, "base")
        assert counts.before["entries"] == 2 and counts.before["hits"] == 1
        ask(base_url, "base", messages=question("E24"), max_tokens=4)
        ask(base_url, "base", messages=question("E09"), max_tokens=4)
        assert counts.grew() == {"queries": 2, "hits": 2, "cached": 2}
        ask(base_url, "base", messages=question("E15"), max_tokens=4)
        assert "hits" not in Counts(base_url, "base").grew() and counts.grew()["hits"] == 2


def test_a_hit_takes_no_slot_and_an_aborted_answer_is_not_kept(tiny_model_dir):
    with serving(Engine(tiny_model_dir), max_running=1, max_waiting=0) as base_url:
        first = ask(base_url, "base", max_tokens=4)
        counts = Counts(base_url, "base")
        http, response, _lines = hold_slot(base_url)
        try:
            assert sample(base_url, "hangjia:num_requests_running") == 1
            assert ask(base_url, "base", max_tokens=4).choices[0].message.content == first.choices[0].message.content
            assert sample(base_url, "hangjia:request_rejected_total") == 0
        finally:
            response.close()  # the long greedy stream is abandoned: aborted, not cached
            http.close()
        assert wait_for(lambda: sample(base_url, "hangjia:request_success_total", finished_reason="abort") == 1)
        assert counts.grew()["hits"] == 1 and Counts(base_url, "base").before["entries"] == 1


def test_only_finished_answers_are_kept_and_entries_are_counted_per_model():
    metrics = Metrics()
    cache = ResponseCache(2, metrics)
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    cache.put("a", Entry("base", (Answer("hi", "stop"), Answer("h", "abort")), usage))
    cache.put(None, Entry("base", (Answer("hi", "stop"),), usage))
    assert len(cache) == 0 and cache.get("a", "base") is None
    for key, model in [("a", "base"), ("b", "domain"), ("a", "base"), ("c", "domain")]:  # a kept again: b is oldest
        cache.put(key, Entry(model, (Answer(key, "length"),), usage))
    assert len(cache) == 2 and cache.get("b", "domain") is None
    assert cache.get("a", "base").answers[0].text == "a" and cache.get("c", "domain").answers[0].text == "c"
    rendered = metrics.render().decode()
    for line in [
        'hangjia:response_cache_entries{model_name="base"} 1.0',
        'hangjia:response_cache_entries{model_name="domain"} 1.0',
        'hangjia:response_cache_queries_total{model_name="base"} 2.0',
        'hangjia:response_cache_queries_total{model_name="domain"} 2.0',
        'hangjia:response_cache_hits_total{model_name="base"} 1.0',
        'hangjia:response_cache_hits_total{model_name="domain"} 1.0',
    ]:
        assert line in rendered
    assert not ResponseCache(0, metrics).enabled
