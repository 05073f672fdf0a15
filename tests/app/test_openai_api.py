"""The OpenAI-compatible server, driven by the official `openai` client against a live uvicorn server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from hangjia.app.openai_api import StopScanner
from hangjia.app.server import serve
from hangjia.core.config import ServeConfig
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from tests.app.conftest import QUESTION, live_server


def make_adapter(base_dir: Path, out: Path) -> Path:
    """A random (not zero-initialised) LoRA adapter, so `domain` answers differently from `base`.

    Random tiny models babble (the base one answers only newlines, which strip to ""); with this seed
    and scale the domain one says "-----… with", which has something to stream and to cut.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config).save_pretrained(out)
    return out


def make_index(out: Path):
    from hangjia.corpus.chunk import Chunk
    from hangjia.corpus.index import BM25Index

    texts = {
        "dishwasher_error_codes.md": "Error E24 means the drain is blocked; clean the filter and reset the DW4500.",
        "warranty_policy.md": "The warranty covers parts and labour for two years from the date of purchase.",
        "heat_pump_troubleshooting.txt": "If the heat pump ices up, run a manual defrost from the service menu.",
    }
    chunks = [
        Chunk(id=f"c{i}", source=source, section="Main", start=0, end=len(text), text=text)
        for i, (source, text) in enumerate(texts.items())
    ]
    index = BM25Index.build(chunks)
    index.save(out)
    return BM25Index.load(out)


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory) -> Iterator[str]:
    """base + a LoRA `domain` + a BM25 index over three chunks."""
    tmp = tmp_path_factory.mktemp("serve")
    adapter = make_adapter(tiny_model_dir, tmp / "adapter")
    with live_server(Engine(tiny_model_dir, adapter, make_index(tmp / "index"))) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def plain_url(tiny_model_dir) -> Iterator[str]:
    """Only `base`: no adapter, no index."""
    with live_server(Engine(tiny_model_dir)) as base_url:
        yield base_url


@pytest.fixture
def client(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def ask(client: openai.OpenAI, model: str = "domain", **kwargs):
    kwargs = {"messages": QUESTION, "temperature": 0, "max_tokens": 12, "extra_body": {"rag": False}} | kwargs
    return client.chat.completions.create(model=model, **kwargs)


def test_health_and_ready(url, plain_url):
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{url}/ready").json() == {"status": "ready", "models": ["base", "domain"]}
    assert httpx.get(f"{plain_url}/ready").json()["models"] == ["base"]


def test_models_lists_base_domain_and_the_embedder_with_what_each_is(client, plain_url, tiny_model_dir):
    models = client.models.list()
    assert [m.id for m in models.data] == ["base", "domain", "all-MiniLM-L6-v2"]
    assert all(m.object == "model" and m.owned_by == "hangjia" and m.created > 0 for m in models.data)
    base, domain, embedder = (m.model_extra for m in models.data)
    assert base == {"kind": "base model", "root": str(tiny_model_dir)}
    assert domain["kind"] == "LoRA adapter" and domain["parent"] == "base" and domain["root"].endswith("adapter")
    assert embedder == {"kind": "embedding model"}
    plain = openai.OpenAI(base_url=f"{plain_url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in plain.models.list().data] == ["base", "all-MiniLM-L6-v2"]


def test_greedy_completion_is_deterministic_and_usage_adds_up(client):
    first, second = ask(client), ask(client)
    assert first.id.startswith("chatcmpl-") and first.object == "chat.completion"
    assert first.model == "domain"
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content == second.choices[0].message.content != ""
    assert first.choices[0].finish_reason in {"stop", "length"}
    usage = first.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert second.usage == usage


def test_the_adapter_changes_the_answer(client):
    base, domain = ask(client, "base"), ask(client, "domain")
    assert base.usage.prompt_tokens == domain.usage.prompt_tokens  # same prompt, different weights
    assert base.choices[0].message.content != domain.choices[0].message.content


def test_stream_joins_up_to_the_plain_answer(client):
    plain = ask(client, max_tokens=24)
    chunks = list(ask(client, max_tokens=24, stream=True, stream_options={"include_usage": True}))
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_stream_is_server_sent_events_ending_in_done(url):
    body = {"model": "base", "messages": QUESTION, "max_tokens": 4, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(line[6:]) for line in events[:-1])  # include_usage not asked


def test_stop_string_cuts_the_answer_in_both_modes(client):
    full = ask(client, max_tokens=24).choices[0].message.content
    stop = full[-3:]
    expected = full[: full.find(stop)].rstrip()
    assert expected, f"pick a stop string that leaves something of {full!r}"
    cut = ask(client, max_tokens=24, stop=[stop, "never-appears"])
    assert cut.choices[0].message.content == expected
    assert cut.choices[0].finish_reason == "stop"
    chunks = list(ask(client, max_tokens=24, stop=stop, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_stop_string_ends_decoding_so_fewer_tokens_are_generated(client):
    full = ask(client, max_tokens=24)
    assert "with" in full.choices[0].message.content and full.usage.completion_tokens == 24
    for stream in (False, True):
        extra = {"stream_options": {"include_usage": True}} if stream else {}
        reply = ask(client, max_tokens=24, stop="with", stream=stream, **extra)
        usage = list(reply)[-1].usage if stream else reply.usage
        assert usage.completion_tokens < full.usage.completion_tokens  # 12 of 24: it stops at "with"


def test_n_choices_and_seeded_sampling(client):
    sampled = ask(client, n=2, temperature=1.0, seed=7)
    assert [c.index for c in sampled.choices] == [0, 1]
    assert ask(client, n=2, temperature=1.0, seed=7).choices == sampled.choices  # same seed, same text
    assert sampled.usage.prompt_tokens == ask(client).usage.prompt_tokens  # the prompt is counted once
    one = ask(client, temperature=1.0, seed=11).choices[0].message.content
    assert ask(client, temperature=1.0, seed=11).choices[0].message.content == one
    chunks = ask(client, temperature=1.0, seed=11, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == one
    with pytest.raises(openai.BadRequestError, match="one answer per request"):
        ask(client, n=2, stream=True)
    with pytest.raises(openai.BadRequestError, match="n: Input should be less than or equal to 8"):
        ask(client, n=9)


def test_text_completions_continue_the_raw_prompt(client):
    reply = client.completions.create(model="domain", prompt="Error E24 means", max_tokens=12, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    text = reply.choices[0].text
    assert text and reply.choices[0].finish_reason in {"stop", "length"}
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    chunks = list(
        client.completions.create(
            model="domain",
            prompt="Error E24 means",
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    assert chunks[-1].usage == reply.usage
    several = client.completions.create(model="domain", prompt=["Error E24 means", "The warranty"], n=2, max_tokens=4)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    stopped = client.completions.create(
        model="domain", prompt="Error E24 means", max_tokens=12, temperature=0, stop="with"
    )
    assert "with" not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="echo is not supported"):
        client.completions.create(model="domain", prompt="Error", echo=True)
    with pytest.raises(openai.NotFoundError, match="Unknown model"):
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Error")


def test_the_openapi_schema_lists_every_route(url):
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    for path in ["/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/metrics", "/health"]:
        assert path in paths, path


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError, match="Unknown model 'gpt-4o'"):
        ask(client, "gpt-4o")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"model": "base", "messages": "hello"}', "messages: Input should be a valid list"),
        (b'{"model": "base", "messages": []}', "messages: List should have at least 1 item"),
        (b'{"model": "base", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', "temperature"),
        (b'{"model": "base", "messages": [', "not valid JSON"),
    ],
)
def test_malformed_body_is_a_400_with_a_message(url, content, expected):
    response = httpx.post(f"{url}/v1/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert expected in error["message"]
    assert error["type"] == "invalid_request_error" and set(error) == {"message", "type", "param", "code"}


def test_unknown_fields_are_ignored_and_text_parts_accepted(client):
    reply = ask(
        client,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION[0]["content"]}]}],
        user="someone",
        seed=7,
    )
    assert reply.choices[0].message.content == ask(client).choices[0].message.content != ""


def test_rag_without_an_index_is_a_clear_400(plain_url):
    plain = openai.OpenAI(base_url=f"{plain_url}/v1", api_key="unused", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="no index"):
            ask(plain, "base", stream=stream, extra_body={"rag": True})


def test_rag_answers_carry_citations(url):
    def post(model: str, **extra) -> dict:
        body = {"model": model, "messages": QUESTION, "max_tokens": 4, "temperature": 0, **extra}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    citations = post("domain")["citations"]  # RAG is on by default for `domain` when there is an index
    assert citations[0]["source"] == "dishwasher_error_codes.md" and citations[0]["index"] == 1
    assert post("base", rag=True)["citations"] == citations
    assert "citations" not in post("base")
    assert "citations" not in post("domain", rag=False)

    body = {"model": "domain", "messages": QUESTION, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        first = json.loads(next(response.iter_lines()).removeprefix("data: "))
    assert first["citations"] == citations


def test_serve_refuses_a_busy_port_before_loading_anything(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # A base model that does not exist: reaching the model loader would raise a different error.
        with pytest.raises(HangjiaError, match=f"Port {port} on 127.0.0.1 is already in use"):
            serve(tmp_path, str(tmp_path / "no-model"), ServeConfig(host="127.0.0.1", port=port), rag_top_k=3)


@pytest.mark.parametrize(
    "pieces", [["Hello wor", "ld. ST", "OP more"], list("  Hello world. STOP more"), ["Hello world. STOP more"]]
)
def test_stop_scanner_gives_the_same_text_however_the_pieces_fall(pieces):
    scanner = StopScanner(["STOP", "xyz"])
    out = "".join(scanner.feed(p) for p in pieces) + scanner.finish()
    assert out == "Hello world." and scanner.stopped


def test_stop_scanner_holds_back_only_what_may_still_be_a_stop_or_trailing_space():
    scanner = StopScanner(["STOP"])
    assert scanner.feed(" abc ST") == "abc"
    assert scanner.finish() == " ST"  # never completed, so it was text after all
    scanner = StopScanner(["STOP"])
    assert scanner.feed("abc ST") == "abc"
    assert scanner.feed("  ") == " ST"
    assert scanner.finish() == ""
    assert not scanner.stopped
