"""Teachers: the endpoint client against a scripted HTTP endpoint, the SQLite cache and budget, a tiny local model."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from hangjia.core.errors import HangjiaError
from hangjia.llm.teacher import CachedTeacher, EndpointTeacher, LocalTeacher, make_teacher
from tests.fake_teacher import fake_endpoint, words
from tests.tiny_models import build_tiny_model


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def echo(messages: list[dict[str, str]]) -> str:
    return "echo " + messages[-1]["content"]


def test_endpoint_keeps_order_with_concurrent_requests():
    in_flight, most = 0, 0
    lock = threading.Lock()

    def slow_echo(messages):
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.08 - 0.01 * int(messages[-1]["content"][1:]))  # later questions finish first
        with lock:
            in_flight -= 1
        return echo(messages)

    with fake_endpoint(slow_echo) as server:
        teacher = EndpointTeacher(server.url, "fake-teacher", concurrency=4)
        replies = teacher.complete([user(f"q{i}") for i in range(8)], temperature=0)
        assert replies == [f"echo q{i}" for i in range(8)]
        assert most > 1  # the requests really overlapped
        assert [r["temperature"] for r in server.requests] == [0] * 8


def test_endpoint_records_usage():
    with fake_endpoint(echo) as server:
        teacher = EndpointTeacher(server.url, "fake-teacher")
        [reply] = teacher.generate([user("how many words here")], max_tokens=32, temperature=0, seed=7)
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("echo how many words here", 4, 5)
    assert (server.requests[0]["max_tokens"], server.requests[0]["seed"]) == (32, 7)


@pytest.mark.parametrize("status", [500, 429])
def test_endpoint_retries_scripted_failures(status):
    with fake_endpoint(echo, fail_first=2, fail_status=status) as server:
        teacher = EndpointTeacher(server.url, "fake-teacher", max_retries=3)
        assert teacher.complete([user("q")]) == ["echo q"]
    assert (len(server.requests), server.failed, teacher.failures) == (3, 2, 0)


def test_endpoint_gives_none_past_max_retries():
    def reply(messages):
        if messages[-1]["content"] == "poison":
            raise RuntimeError("boom")
        return echo(messages)

    with fake_endpoint(reply) as server:
        teacher = EndpointTeacher(server.url, "fake-teacher", max_retries=2, concurrency=2)
        assert teacher.complete([user("a"), user("poison"), user("b")]) == ["echo a", None, "echo b"]
    assert server.contents().count("poison") == 3  # one try and two retries
    assert teacher.failures == 1
    assert "500" in teacher.last_error


def test_cache_makes_a_rerun_free(tmp_path):
    conversations = [user(f"question {i}") for i in range(5)] + [user("question 0")]
    with fake_endpoint(echo) as server:
        first = CachedTeacher(EndpointTeacher(server.url, "fake-teacher"), tmp_path / "cache.sqlite")
        replies = first.complete(conversations, temperature=0.7, seed=1)
        assert len(server.requests) == 5  # the repeated conversation is sent once
        assert first.stats.prompt_tokens == 10 and first.stats.completion_tokens == 15

        rerun = CachedTeacher(EndpointTeacher(server.url, "fake-teacher"), tmp_path / "cache.sqlite")
        assert rerun.complete(conversations, temperature=0.7, seed=1) == replies
        assert len(server.requests) == 5
        assert (rerun.stats.cache_hits, rerun.stats.sent, rerun.stats.prompt_tokens) == (6, 0, 0)

        rerun.complete(conversations[:1], temperature=0.7, seed=2)  # another seed is another request
        assert len(server.requests) == 6


def test_failed_replies_are_not_cached(tmp_path):
    broken = True

    def reply(messages):
        if broken:
            raise RuntimeError("down")
        return echo(messages)

    with fake_endpoint(reply) as server:
        teacher = CachedTeacher(EndpointTeacher(server.url, "fake-teacher", max_retries=0), tmp_path / "c.sqlite")
        assert teacher.complete([user("q")]) == [None]
        assert teacher.stats.failures == 1
        broken = False
        assert teacher.complete([user("q")]) == ["echo q"]
        assert len(server.requests) == 2


def test_budget_stops_sending(tmp_path):
    def reply(messages):
        return "x y"  # 2 completion tokens; the prompt "a b c" is 3: each request costs 5

    conversations = [user(f"a b c{i}") for i in range(5)]
    with fake_endpoint(reply) as server:
        inner = EndpointTeacher(server.url, "fake-teacher", concurrency=1)
        teacher = CachedTeacher(inner, tmp_path / "cache.sqlite", budget_tokens=10, price_per_1k_tokens=2.0)
        assert teacher.complete(conversations) == ["x y", "x y", None, None, None]
        assert len(server.requests) == 2
        assert teacher.budget_exhausted
        assert (teacher.stats.skipped, teacher.stats.prompt_tokens + teacher.stats.completion_tokens) == (3, 10)
        assert teacher.stats.cost == pytest.approx(0.02)
        # Spent: cached replies still come back, nothing new is sent.
        assert teacher.complete(conversations[1:3]) == ["x y", None]
        assert len(server.requests) == 2


def test_estimate_sends_nothing(tmp_path):
    conversations = [user(f"question number {i}") for i in range(4)]
    with fake_endpoint(echo) as server:
        teacher = CachedTeacher(
            EndpointTeacher(server.url, "fake-teacher"), tmp_path / "c.sqlite", price_per_1k_tokens=1.0
        )
        teacher.complete(conversations[:2], max_tokens=100)
        est = teacher.estimate(conversations, 100)
        assert len(server.requests) == 2
    assert (est.requests, est.cache_hits, est.max_completion_tokens) == (4, 2, 200)
    prompt = sum(teacher.inner.count_tokens(m) for m in conversations[2:])
    assert est.prompt_tokens == prompt
    assert est.cost == pytest.approx((prompt + 200) / 1000)
    assert teacher.stats.requests == 2  # a dry run is not counted as asking


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # One torch thread: on a busy 2-core machine two OpenMP threads make this 32-wide model ~20x slower (4 s vs 0.2 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    corpus = ["The DW-6200 drain pump is part KP-2210. Error E24 means the pump is blocked. The warranty is 2 years."]
    yield build_tiny_model(tmp_path_factory.mktemp("tiny-teacher"), corpus)
    torch.set_num_threads(threads)


def test_local_teacher_on_a_tiny_model(tiny_dir):
    teacher = LocalTeacher(tiny_dir, batch_size=2)
    conversations = [user("What is the drain pump part number?"), user("E24"), user("How long is the warranty?")]
    state = torch.random.get_rng_state()
    greedy = teacher.generate(conversations, max_tokens=6, temperature=0)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    assert len(greedy) == 3 and all(isinstance(r.text, str) for r in greedy)
    assert all(1 <= r.completion_tokens <= 6 for r in greedy)
    assert [r.prompt_tokens for r in greedy] == [teacher.count_tokens(m) for m in conversations]
    assert teacher.generate(conversations, max_tokens=6, temperature=0) == greedy
    sampled = teacher.complete(conversations, max_tokens=6, temperature=1.0, seed=3)
    assert teacher.complete(conversations, max_tokens=6, temperature=1.0, seed=3) == sampled
    assert teacher.complete(conversations, max_tokens=6, temperature=1.0, seed=4) != sampled


def test_make_teacher(tmp_path):
    url = "http://127.0.0.1:9/v1"
    teacher = make_teacher("endpoint", model="m", base_url=url, cache_path=tmp_path / "c.sqlite", concurrency=3)
    assert isinstance(teacher.inner, EndpointTeacher) and teacher.inner.parallelism == 3
    with pytest.raises(HangjiaError, match="base_url"):
        make_teacher("endpoint", model="m", cache_path=tmp_path / "c.sqlite")
    with pytest.raises(HangjiaError, match="Unknown teacher kind"):
        make_teacher("gpt", cache_path=tmp_path / "c.sqlite")


def test_word_usage_helper():
    assert words(" a  b c ") == 3
