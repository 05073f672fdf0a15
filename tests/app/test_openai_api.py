"""The OpenAI-compatible server, driven by the official `openai` client against a live uvicorn server."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from hangjia.app.server import serve, startup_warnings
from hangjia.app.streaming import StopScanner
from hangjia.core.config import ServeConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import NOT_IN_DOCUMENTS
from hangjia.llm.generation import Engine
from tests.app.conftest import QUESTION, answering, live_server, make_index, sample

QUESTION_ZH = [{"role": "user", "content": "DW4500洗碗机怎么复位？"}]


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


@pytest.fixture(scope="module")
def url(tiny_model_dir, tmp_path_factory) -> Iterator[str]:
    """base + a LoRA `domain` + a BM25 index over three chunks."""
    tmp = tmp_path_factory.mktemp("serve")
    adapter = make_adapter(tiny_model_dir, tmp / "adapter")
    with live_server(Engine(tiny_model_dir, adapter, make_index(tmp / "index"))) as base_url:
        yield base_url


def make_empty_index(out: Path):
    """An index whose chunk list is empty beside a BM25 model that still knows words (a hand-emptied or truncated
    chunks.jsonl): searching it used to index past the end of the chunks, a 500."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.corpus.index import CHUNKS_FILE, BM25Index

    text = "Error E24 means the DW4500 dishwasher drain is blocked."
    BM25Index.build([Chunk("c0", "dishwasher_error_codes.md", "Main", 0, len(text), text)]).save(out)
    (out / CHUNKS_FILE).write_text("")
    return BM25Index.load(out)


@pytest.fixture(scope="module")
def bare_url(tiny_model_dir, tmp_path_factory) -> Iterator[str]:
    """A workspace gone wrong: no trained model, an index with no passages; and a model said to write English."""
    engine = Engine(tiny_model_dir, None, make_empty_index(tmp_path_factory.mktemp("empty") / "index"))
    with live_server(engine, languages=["en"]) as base_url:
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

    events = stream_events(url, {"model": "domain", "messages": QUESTION, "max_tokens": 4})
    assert events[0]["citations"] == [{**c, "cited": None} for c in citations]  # not known before the answer
    assert next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"])["citations"] == citations


def stream_events(url: str, body: dict) -> list[dict]:
    """The JSON chunks of a streamed chat completion, [DONE] left off."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200, response.read()
        lines = [line.removeprefix("data: ") for line in response.iter_lines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_citation_records_carry_place_span_text_and_whether_the_answer_cites_them(url, client, monkeypatch):
    question = "How do I reset the DW4500 dishwasher, what does the warranty cover, and when does a heat pump defrost?"
    body = {"model": "domain", "messages": [{"role": "user", "content": question}], "max_tokens": 4}
    answering(monkeypatch, "Clean the filter, then hold START [1]【3】 [9].")
    reply = client.chat.completions.create(**body)
    citations = reply.model_extra["citations"]
    assert reply.citations == citations  # the openai client keeps the extension field as an attribute too
    assert [c["index"] for c in citations] == [1, 2, 3]
    assert [c["score"] for c in citations] == sorted((c["score"] for c in citations), reverse=True)
    dishwasher = next(c for c in citations if c["chunk_id"] == "c0")
    text = "Error E24 means the drain is blocked; clean the filter and reset the DW4500."
    assert dishwasher == {
        "index": dishwasher["index"],
        "chunk_id": "c0",
        "source": "dishwasher_error_codes.md",
        "section": "Main",
        "page": None,
        "start": 0,
        "end": len(text),
        "text": text,
        "score": dishwasher["score"],
        "cited": dishwasher["index"] in (1, 3),
    }
    assert [c["cited"] for c in citations] == [True, False, True]  # [9] is past the 3 passages: ignored

    events = stream_events(url, body)
    assert [c["cited"] for c in events[0]["citations"]] == [None, None, None]
    finish = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert [c["cited"] for c in finish[0]["citations"]] == [True, False, True]
    assert [c["index"] for c in events[0]["citations"]] == [1, 2, 3]

    answering(monkeypatch, "Hold START for three seconds.")
    assert not any(c["cited"] for c in client.chat.completions.create(**body).model_extra["citations"])


def test_the_openapi_schema_documents_citations_and_notes(url):
    schemas = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
    citation = schemas["Citation"]
    assert set(citation["properties"]) == {
        "index",
        "chunk_id",
        "source",
        "section",
        "page",
        "start",
        "end",
        "text",
        "score",
        "cited",
    }
    assert "[index]" in citation["properties"]["cited"]["description"]
    assert "notes" in schemas["ChatCompletion"]["properties"]


def test_a_workspace_without_a_trained_model_names_hangjia_build(bare_url):
    bare = openai.OpenAI(base_url=f"{bare_url}/v1", api_key="unused", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError, match="not trained in this workspace yet; run `hangjia build`"):
            ask(bare, "domain", stream=stream)
    with pytest.raises(openai.NotFoundError, match="hangjia build"):
        bare.completions.create(model="domain", prompt="Error")


def test_an_index_without_passages_is_a_clear_400_not_a_500(bare_url):
    bare = openai.OpenAI(base_url=f"{bare_url}/v1", api_key="unused", max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="holds no passages; run `hangjia ingest"):
            ask(bare, "base", stream=stream, extra_body={"rag": True})
    assert ask(bare, "base").choices[0].finish_reason in {"stop", "length"}  # without retrieval it answers


def test_serve_says_at_startup_what_a_partly_built_workspace_lacks(tmp_path):
    from types import SimpleNamespace

    bare = SimpleNamespace(model_names=["base"], index=None)
    assert [w.split(":")[0] for w in startup_warnings(bare, tmp_path)] == [
        f"No trained model in {tmp_path} yet",
        f"No search index in {tmp_path}",
    ]
    assert "`hangjia build`" in startup_warnings(bare, tmp_path)[0]
    empty = SimpleNamespace(model_names=["base", "domain"], index=SimpleNamespace(chunks=[]))
    (warning,) = startup_warnings(empty, tmp_path)
    assert "holds no passages" in warning and "hangjia ingest" in warning
    built = SimpleNamespace(model_names=["base", "domain"], index=SimpleNamespace(chunks=["c0"]))
    assert startup_warnings(built, tmp_path) == []


def test_a_chinese_question_to_an_english_model_carries_a_note(bare_url, url):
    bare = openai.OpenAI(base_url=f"{bare_url}/v1", api_key="unused", max_retries=0)
    reply = ask(bare, "base", messages=QUESTION_ZH)
    note = reply.model_extra["notes"][0]
    assert note.startswith("The model base (") and note.endswith(
        "writes English; answers to Chinese questions may be poor."
    )
    assert "notes" not in ask(bare, "base").model_extra  # an English question
    events = stream_events(bare_url, {"model": "base", "messages": QUESTION_ZH, "max_tokens": 4})
    assert events[0]["notes"] == [note] and all("notes" not in e for e in events[1:])
    plain = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert "notes" not in ask(plain, "base", messages=QUESTION_ZH).model_extra  # what a local folder writes is unknown


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


def test_the_guard_says_the_documents_do_not_say_and_why(url, client, monkeypatch):
    """Before generating (a code no document mentions) and after (a number the passages lack); off per request."""
    made_up = "It costs 42 EUR [1]."
    answering(monkeypatch, made_up)
    before = {r: sample(url, "hangjia:guard_blocked_total", model_name="domain", reason=r) for r in _REASONS}
    ask = {"model": "domain", "max_tokens": 4}

    unknown = client.chat.completions.create(**ask, messages=[{"role": "user", "content": "What does E77 mean?"}])
    choice = unknown.model_dump()["choices"][0]
    assert choice["message"]["content"] == NOT_IN_DOCUMENTS and unknown.usage.completion_tokens == 0
    assert choice["guard"] == {
        "passed": False,
        "reason": "unknown_terms",
        "detail": "the documents never mention E77",
        "reply": NOT_IN_DOCUMENTS,
        "original": None,
    }

    question = [{"role": "user", "content": "How much does it cost to reset the DW4500 dishwasher?"}]
    ungrounded = client.chat.completions.create(**ask, messages=question).model_dump()["choices"][0]
    assert ungrounded["message"]["content"] == NOT_IN_DOCUMENTS
    assert ungrounded["guard"]["reason"] == "ungrounded" and ungrounded["guard"]["original"] == made_up
    assert "42" in ungrounded["guard"]["detail"]

    unguarded = client.chat.completions.create(**ask, messages=question, extra_body={"guard": False})
    assert unguarded.choices[0].message.content == made_up and "guard" not in unguarded.model_dump()["choices"][0]

    # A stream cannot take back what it sent: its finishing chunk carries the verdict and the reply to show instead.
    events = stream_events(url, {**ask, "messages": question})
    finish = next(e for e in events if e["choices"] and e["choices"][0]["finish_reason"])
    assert finish["guard"]["reason"] == "ungrounded" and finish["guard"]["reply"] == NOT_IN_DOCUMENTS
    early = stream_events(url, {**ask, "messages": [{"role": "user", "content": "What does E77 mean?"}]})
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in early if e["choices"]) == NOT_IN_DOCUMENTS

    answering(monkeypatch, "Clean the filter and reset it [1].")
    grounded = client.chat.completions.create(**ask, messages=question).model_dump()["choices"][0]
    assert grounded["guard"] == {"passed": True, "reason": None, "detail": "", "reply": None, "original": None}
    after = {r: sample(url, "hangjia:guard_blocked_total", model_name="domain", reason=r) for r in _REASONS}
    assert {r: after[r] - before[r] for r in _REASONS} == {"ungrounded": 2, "unknown_terms": 2}


_REASONS = ("ungrounded", "unknown_terms")
