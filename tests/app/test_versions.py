"""Named versions (serve.versions) in one server: each answers as its own weights do, loads on its first request, and
within serve.memory_budget_mb the least recently used idle one is unloaded to make room."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from hangjia.app.metrics import Metrics
from hangjia.app.server import serve
from hangjia.app.versions import Versions
from hangjia.core.config import ServeConfig, load_config
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from hangjia.llm.llamacpp import resident_bytes
from hangjia.llm.models import load_causal_lm, load_tokenizer, loaded_bytes
from hangjia.train.export import to_gguf
from tests.app.conftest import live_server, sample
from tests.tiny_models import random_lora

pytest.importorskip("llama_cpp")

SMALL = {"parallel": 2, "context": 256}  # a llama.cpp version's KV cache: 2 × 256 cells
QUESTIONS = ["How do I reset the DW4500 dishwasher?", "What does error E24 mean?", "Which detergent should I use?"]


@pytest.fixture(scope="module")
def models(tiny_smollm_dir, tmp_path_factory) -> dict[str, Path]:
    """Two random LoRA adapters strong enough to change greedy answers, and GGUF files of the base and of the base
    with the second adapter merged in."""
    root = tmp_path_factory.mktemp("versions")
    second = random_lora(tiny_smollm_dir, root / "second", seed=2, scale=1.0)
    merged = load_causal_lm(tiny_smollm_dir, second).merge_and_unload()
    merged.save_pretrained(root / "merged")
    load_tokenizer(tiny_smollm_dir).save_pretrained(root / "merged")
    return {
        "domain": random_lora(tiny_smollm_dir, root / "domain", seed=1, scale=1.0),
        "second": second,
        "second.gguf": to_gguf(root / "merged", root / "second.gguf", "f16"),
        "base.gguf": to_gguf(tiny_smollm_dir, root / "base.gguf", "f16"),
    }


@pytest.fixture(scope="module")
def engine(tiny_smollm_dir, models) -> Iterator[Engine]:
    """base, a LoRA domain, `second`: another LoRA (beside domain, on the same weights), `second-gguf`: the same
    weights merged into a GGUF file (llama.cpp)."""
    versions = {"second": models["second"], "second-gguf": models["second.gguf"]}
    engine = Engine(tiny_smollm_dir, models["domain"], versions=versions)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def url(engine) -> Iterator[str]:
    with live_server(engine, **SMALL) as base_url:
        yield base_url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def answer(url: str, model: str, question: str = QUESTIONS[0]) -> str:
    messages = [{"role": "user", "content": question}]
    reply = client(url).chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    return reply.choices[0].message.content


def listed(url: str) -> dict[str, dict]:
    return {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}


def test_two_versions_answer_differently_in_one_server_and_load_on_first_request(url, engine, models):
    before = listed(url)
    assert before["second"] | {"created": 0} == {
        "id": "second",
        "object": "model",
        "created": 0,
        "owned_by": "hangjia",
        "kind": "LoRA adapter",
        "root": str(models["second"]),
        "parent": "base",
        "loaded": False,
    }
    assert before["second-gguf"]["kind"] == "GGUF model" and not before["second-gguf"]["loaded"]
    assert before["second-gguf"]["root"] == str(models["second.gguf"]) and "parent" not in before["second-gguf"]
    assert "loaded" not in before["base"] and "loaded" not in before["domain"]  # loaded at startup, always
    assert sample(url, "hangjia:model_loads_total", model_name="second") == 0

    answers = {name: answer(url, name) for name in ["base", "domain", "second", "second-gguf"]}
    assert len({answers["base"], answers["domain"], answers["second"]}) == 3, answers
    assert answers["second-gguf"] == answers["second"]  # the same weights, on llama.cpp
    after = listed(url)
    assert after["second"]["loaded"] and after["second-gguf"]["loaded"]
    assert "second" in engine.model.peft_config  # beside the domain adapter, on the base's weights
    assert answer(url, "second") == answers["second"] and answer(url, "domain") == answers["domain"]
    for name in ["second", "second-gguf"]:
        assert sample(url, "hangjia:model_loads_total", model_name=name) == 1
    # A LoRA on the shared base holds its adapter only; llama.cpp its file and its KV cache.
    assert sample(url, "hangjia:model_memory_bytes", model_name="second") == loaded_bytes(models["second"])
    gguf_bytes = resident_bytes(models["second.gguf"], **SMALL)
    assert sample(url, "hangjia:model_memory_bytes", model_name="second-gguf") == gguf_bytes
    assert gguf_bytes - models["second.gguf"].stat().st_size == 2 * 256 * 2 * 2 * (16 + 16) * 2  # layers, KV heads


def test_an_unknown_model_is_404_naming_the_served_ones(url):
    with pytest.raises(openai.NotFoundError, match="this server has: base, domain, second, second-gguf"):
        answer(url, "third")


def test_a_budget_for_one_version_unloads_the_least_recently_used(tiny_smollm_dir, models):
    engine = Engine(tiny_smollm_dir, versions={"a": models["base.gguf"], "b": models["second.gguf"]})
    try:
        with live_server(engine, memory_budget_mb=20, **SMALL) as url:  # each GGUF is ~14 MiB
            for model, question in zip(["a", "b", "a"], QUESTIONS, strict=True):  # new questions: no cached answer
                assert answer(url, model, question)
            assert sample(url, "hangjia:model_loads_total", model_name="a") == 2
            assert sample(url, "hangjia:model_unloads_total", model_name="a") == 1
            assert sample(url, "hangjia:model_loads_total", model_name="b") == 1
            assert sample(url, "hangjia:model_unloads_total", model_name="b") == 1
            assert sample(url, "hangjia:model_memory_bytes", model_name="b") == 0
            models = listed(url)
            assert models["a"]["loaded"] and not models["b"]["loaded"]
    finally:
        engine.close()


def test_a_version_in_use_stays_loaded_and_one_load_serves_requests_arriving_together(tiny_smollm_dir, models):
    engine = Engine(tiny_smollm_dir, versions={"a": models["base.gguf"], "b": models["second.gguf"]})
    metrics = Metrics()
    versions = Versions(engine, ServeConfig(memory_budget_mb=20, **SMALL), metrics)

    def count(name: str, model: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"model_name": model})

    try:
        threads = [threading.Thread(target=lambda: (versions.hold("a"), versions.load("a"))) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert count("hangjia:model_loads_total", "a") == 1 and engine.is_loaded("a")
        for _ in range(7):
            versions.release("a")  # one request still runs on `a`
        versions.hold("b")
        with pytest.raises(HangjiaError, match="beside a, which requests are using now") as refused:
            versions.load("b")
        assert refused.value.status_code == 503 and engine.is_loaded("a") and not engine.is_loaded("b")
        versions.release("a")  # now it is idle: `b` takes its place
        versions.load("b")
        assert engine.is_loaded("b") and not engine.is_loaded("a")
        assert count("hangjia:model_unloads_total", "a") == 1
        versions.release("b")
    finally:
        engine.close()


def test_bad_versions_fail_at_startup_with_what_to_do(tiny_smollm_dir, models, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServeConfig(port=port, versions={"v2": tmp_path / "missing"})
    with pytest.raises(HangjiaError, match=r"serve.versions.v2 is .*missing, which is neither a PEFT adapter folder"):
        serve(tmp_path, str(tiny_smollm_dir), config, rag_top_k=3)

    engine = Engine(tiny_smollm_dir, versions={"lora": models["second"], "gguf": models["second.gguf"]})
    with pytest.raises(HangjiaError, match="an adapter folder, which llama.cpp cannot serve"):
        Versions(engine, ServeConfig(backends={"lora": "llama.cpp"}), Metrics())
    with pytest.raises(HangjiaError, match="a .gguf file, which only llama.cpp serves, not transformers"):
        Versions(engine, ServeConfig(backends={"gguf": "transformers"}), Metrics())
    # Without a domain adapter to sit beside, a LoRA version is a model of its own: the base weights count again.
    sizes = Versions(engine, ServeConfig(**SMALL), Metrics()).sizes
    assert sizes["lora"] == loaded_bytes(tiny_smollm_dir) + loaded_bytes(models["second"])
    with pytest.raises(HangjiaError, match=r"versions.lora needs about 24 MiB, more than .*memory_budget_mb \(1\)"):
        Versions(engine, ServeConfig(memory_budget_mb=1, **SMALL), Metrics())

    (tmp_path / "hangjia.yaml").write_text("serve:\n  versions:\n    domain: adapter\n")
    with pytest.raises(HangjiaError, match="'domain' is served already"):
        load_config(tmp_path / "hangjia.yaml")
    (tmp_path / "hangjia.yaml").write_text("serve:\n  versions:\n    domain@3: registry/3\n")
    assert load_config(tmp_path / "hangjia.yaml").serve.versions == {"domain@3": tmp_path / "registry" / "3"}
