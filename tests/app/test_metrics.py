"""/metrics: Prometheus text with vLLM's metric names under `hangjia:`, counting what the requests did."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from hangjia.app.metrics import Metrics
from hangjia.llm.generation import Engine
from tests.app.conftest import QUESTION, live_server, sample, scrape

HISTOGRAMS = [
    "hangjia:time_to_first_token_seconds",
    "hangjia:inter_token_latency_seconds",
    "hangjia:time_per_output_token_seconds",
    "hangjia:e2e_request_latency_seconds",
    "hangjia:request_queue_time_seconds",
]


@pytest.fixture(scope="module")
def url(tiny_model_dir) -> Iterator[str]:
    with live_server(Engine(tiny_model_dir)) as base_url:
        yield base_url


def test_metrics_are_prometheus_text_and_count_requests(url):
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    before = scrape(url)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    plain = client.chat.completions.create(model="base", messages=QUESTION, max_tokens=6, temperature=0)
    streamed = list(
        client.chat.completions.create(
            model="base",
            messages=QUESTION,
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    after = scrape(url)

    def grew(name: str, **labels) -> float:
        key = (name, tuple(sorted({"model_name": "base", **labels}.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    usage = [plain.usage, streamed[-1].usage]
    assert grew("hangjia:prompt_tokens_total") == sum(u.prompt_tokens for u in usage)
    assert grew("hangjia:generation_tokens_total") == sum(u.completion_tokens for u in usage) == 11
    finished = {plain.choices[0].finish_reason, next(c.choices[0].finish_reason for c in streamed[-2:-1])}
    assert sum(grew("hangjia:request_success_total", finished_reason=r) for r in finished) == 2
    for name in HISTOGRAMS:
        assert grew(f"{name}_count") >= (2 if name != "hangjia:inter_token_latency_seconds" else 9), name
    assert grew("hangjia:e2e_request_latency_seconds_sum") > 0
    assert sample(url, "hangjia:num_requests_running") == 0 and sample(url, "hangjia:num_requests_waiting") == 0


def test_retrieval_latency_is_recorded_for_rag_requests(tiny_model_dir, tmp_path):
    from tests.app.test_openai_api import make_index

    with live_server(Engine(tiny_model_dir, index=make_index(tmp_path / "index"))) as base_url:
        body = {"model": "base", "messages": QUESTION, "max_tokens": 2, "rag": True}
        assert httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60).status_code == 200
        assert sample(base_url, "hangjia:retrieval_latency_seconds_count") == 1


def test_each_app_counts_in_its_own_registry():
    one, two = Metrics(), Metrics()
    record = one.request("base")
    record.admitted()
    record.finished("stop", 3, 4)
    record.close()
    assert b'hangjia:generation_tokens_total{model_name="base"} 4.0' in one.render()
    assert b"hangjia:generation_tokens_total{" not in two.render()
