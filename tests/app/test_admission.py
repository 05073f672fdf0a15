"""Backpressure and cancellation: a full queue answers 429 at once, a client that leaves frees its slot."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest

from hangjia.app.admission import Admission, QueueFull
from hangjia.llm.generation import Engine
from tests.app.conftest import QUESTION, live_server, sample, wait_for

LONG = 4000  # the tiny model's context is 4096 and the prompt ~85 tokens: a minute of decoding if never stopped


@pytest.fixture(scope="module")
def url(tiny_model_dir) -> Iterator[str]:
    """One generating request at a time and no queue: a second request finds the server full."""
    with live_server(Engine(tiny_model_dir), max_running=1, max_waiting=0) as base_url:
        yield base_url


def hold_slot(url: str) -> tuple[httpx.Client, httpx.Response, Iterator[str]]:
    """Open a long streaming request and read its first event: from then on it holds the only slot.

    The line iterator is returned to be kept: dropping it closes httpcore's stream, and with it the connection."""
    body = {"model": "base", "messages": QUESTION, "max_tokens": LONG, "stream": True, "temperature": 0}
    http = httpx.Client(timeout=60)
    response = http.send(http.build_request("POST", f"{url}/v1/chat/completions", json=body), stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    assert next(lines).startswith("data: ")
    return http, response, lines


def test_a_full_queue_answers_429_with_retry_after_and_a_left_stream_frees_its_slot(url):
    tokens_before = sample(url, "hangjia:generation_tokens_total")
    aborted_before = sample(url, "hangjia:request_success_total", finished_reason="abort")
    http, response, _lines = hold_slot(url)
    try:
        assert sample(url, "hangjia:num_requests_running") == 1
        refused = httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": QUESTION}, timeout=10)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and "busy" in error["message"]
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.RateLimitError, match="busy"):
            client.completions.create(model="base", prompt="Error E24", max_tokens=4)
        assert sample(url, "hangjia:request_rejected_total") >= 2
    finally:
        response.close()  # the client goes away mid-answer
        http.close()

    assert wait_for(lambda: sample(url, "hangjia:num_requests_running") == 0), "the slot was not freed"
    assert wait_for(lambda: sample(url, "hangjia:request_success_total", finished_reason="abort") > aborted_before)
    generated = sample(url, "hangjia:generation_tokens_total") - tokens_before
    assert 0 < generated < LONG / 4, f"decoding ran on after the client left ({generated} tokens)"
    # The server takes the next request at once.
    reply = httpx.post(f"{url}/v1/chat/completions", json={"model": "base", "messages": QUESTION, "max_tokens": 2})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 2


def test_a_prompt_that_cannot_fit_the_context_is_a_400_naming_the_numbers(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match=r"The prompt has \d+ tokens and 5000 more .* holds 4096"):
            client.chat.completions.create(model="base", messages=QUESTION, max_tokens=5000, stream=stream)
    assert wait_for(lambda: sample(url, "hangjia:num_requests_running") == 0)


def test_admission_is_first_come_first_served_and_a_cancelled_waiter_leaves_the_line():
    async def scenario() -> list[str]:
        admission, order = Admission(max_running=1, max_waiting=2), []
        await admission.enter()

        async def waiter(name: str) -> None:
            await admission.enter()
            order.append(name)

        first, gone = asyncio.create_task(waiter("first")), asyncio.create_task(waiter("gone"))
        await asyncio.sleep(0)
        assert admission.waiting == 2
        gone.cancel()
        await asyncio.sleep(0)
        assert admission.waiting == 1
        second = asyncio.create_task(waiter("second"))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await admission.enter()  # one running, two waiting: full
        admission.leave()
        await first
        admission.leave()
        await second
        assert (admission.running, admission.waiting) == (1, 0)
        return order

    assert asyncio.run(scenario()) == ["first", "second"]


def test_retry_after_is_when_a_slot_should_be_free_from_how_long_requests_held_one():
    async def scenario() -> list[int]:
        admission, told = Admission(max_running=2, max_waiting=1), []
        for _ in range(2):
            await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await admission.enter()
        told.append(refused.value.retry_after)  # nothing has finished yet: the floor
        admission.leave(held_s=9.0)  # the waiter takes this slot
        await waiter
        admission.leave(held_s=19.0)  # moving average: 0.8 × 9 + 0.2 × 19 = 11 s
        await admission.enter()
        waiter = asyncio.create_task(admission.enter())
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await admission.enter()
        told.append(refused.value.retry_after)  # one waiting ahead, two slots: 11 × 2 / 2
        assert "retry in 11 s" in refused.value.message
        admission.leave(held_s=600.0)
        await waiter
        admission.leave(held_s=600.0)
        told.append(admission.retry_after)  # capped
        return told

    assert asyncio.run(scenario()) == [1, 11, 60]
