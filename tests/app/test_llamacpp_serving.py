"""`hangjia serve` with serve.backend llama.cpp, as a real subprocess, driven by the official `openai` client.

The base model (a tiny random Llama with SmolLM2's tokenizer) is converted to GGUF at startup; three sequences decode
together (serve.parallel 3), so five concurrent streams run as a batch that others join and leave mid-flight.
"""

from __future__ import annotations

import os
import threading

import pytest
import yaml
from openai import OpenAI

from tests.app.conftest import hangjia_serve, sample, wait_for

QUESTIONS = [
    "How do I reset the DW4500 dishwasher?",
    "What does error E24 mean?",
    "How long is the warranty on the compressor?",
    "Where is the nearest service centre?",
    "Which detergent should I use?",
]


def _ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


@pytest.fixture(scope="module")
def server(tiny_smollm_dir, tmp_path_factory):
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("llamacpp-serve")
    config = root / "hangjia.yaml"
    serve = {"backend": "llama.cpp", "gguf": "f16", "parallel": 3, "context": 512, "max_new_tokens": 16}
    serve["cache_size"] = 0  # repeated greedy requests decode again, in the batch, rather than come from the cache
    config.write_text(yaml.safe_dump({"train": {"base_model": str(tiny_smollm_dir)}, "serve": serve}))
    env = {**os.environ, "HANGJIA_CACHE": str(root / "cache")}
    with hangjia_serve("-w", str(root / "ws"), "--config", str(config), env=env) as served:
        yield served.url
    assert "base (llama.cpp)" in served.output  # the startup line says which backend serves each name


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def test_concurrent_greedy_streams_equal_sequential_answers(server):
    client = _client(server)
    alone = [
        client.chat.completions.create(model="base", messages=_ask(q), temperature=0, max_tokens=12)
        .choices[0]
        .message.content
        for q in QUESTIONS
    ]
    assert all(alone)
    streamed: dict[int, str] = {}

    def stream(i: int) -> None:
        chunks = client.chat.completions.create(
            model="base", messages=_ask(QUESTIONS[i]), temperature=0, max_tokens=12, stream=True
        )
        streamed[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [streamed[i] for i in range(len(QUESTIONS))] == alone


def test_stop_shortens_the_answer_and_n_gives_several(server):
    client = _client(server)
    whole = client.completions.create(model="base", prompt="The dishwasher", temperature=0, max_tokens=16)
    text = whole.choices[0].text
    assert whole.usage.completion_tokens >= 4
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = client.completions.create(model="base", prompt="The dishwasher", temperature=0, max_tokens=16, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < whole.usage.completion_tokens
    assert stop not in cut.choices[0].text and text.startswith(cut.choices[0].text)
    several = client.completions.create(
        model="base", prompt="The dishwasher", temperature=2.0, seed=3, max_tokens=16, n=2
    )
    assert len(several.choices) == 2 and several.choices[0].text != several.choices[1].text


def test_a_client_that_leaves_frees_its_slot(server):
    client = _client(server)
    before = sample(server, "hangjia:request_success_total", model_name="base", finished_reason="abort")
    stream = client.chat.completions.create(
        model="base", messages=_ask(QUESTIONS[0]), temperature=0, max_tokens=400, stream=True
    )
    next(iter(stream))
    stream.close()
    assert wait_for(lambda: sample(server, "hangjia:num_requests_running", model_name="base") == 0)
    assert wait_for(
        lambda: sample(server, "hangjia:request_success_total", model_name="base", finished_reason="abort") > before
    )
    tokens = sample(server, "hangjia:generation_tokens_total", model_name="base")
    assert tokens > 0 and sample(server, "hangjia:time_to_first_token_seconds_count", model_name="base") > 0
