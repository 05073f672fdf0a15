"""The walking skeleton for real: the embedded SmolLM2 through every stage, the CLI and the server.

Slow (a few minutes on 2 cores): a short LoRA run on a slice of the sample domain.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from openai import OpenAI

from tests.app.conftest import hangjia_serve
from tests.paths import KESTREL

pytestmark = pytest.mark.slow

SLICE = ["dishwasher_error_codes.md", "spare_parts_prices.csv", "warranty_policy.md"]
HANGJIA = [sys.executable, "-m", "hangjia"]


def run_cli(*args: str, stdin: str | None = None, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*HANGJIA, *args], capture_output=True, text=True, input=stdin, timeout=timeout, env=env, check=False
    )


GENERAL_PROMPTS = [
    "What is the capital of France?",
    "Name the largest planet in the solar system.",
    "What is 7 multiplied by 8?",
    "Translate good morning into Spanish.",
    "What do plants need to grow?",
    "Why should we wash our hands?",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("e2e")
    docs = root / "docs"
    docs.mkdir()
    for name in SLICE:
        shutil.copy(KESTREL / "docs" / name, docs / name)
    sliced = [
        line
        for line in (KESTREL / "questions.jsonl").read_text().splitlines()
        if any(f"docs/{name}" in json.loads(line)["source"] for name in SLICE)
    ]
    questions = root / "questions.jsonl"
    questions.write_text("\n".join(sliced[:6]) + "\n")
    general = root / "general.jsonl"  # a short forgetting-guard set: the base model answers each prompt once
    general.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in GENERAL_PROMPTS))
    config = root / "hangjia.yaml"
    config.write_text(
        "docs: docs\n"
        # Retrieval-aware examples (long prompts) are covered with a tiny model in tests/stages/test_build.py.
        "select:\n  paraphrases: 1\n  raft: false\n  general_ratio: 0.1\n  general_prompts: general.jsonl\n"
        "train:\n  max_steps: 24\n  batch_size: 4\n  learning_rate: 0.001\n  max_length: 128\n"
        "eval:\n  questions: questions.jsonl\n  max_new_tokens: 24\n"
    )
    ws = root / "ws"
    result = run_cli("build", "--workspace", str(ws), "--config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "ws": ws, "config": config, "stdout": result.stdout}


def test_build_runs_every_stage_and_prints_the_table(project):
    out = project["stdout"]
    for stage in ("ingest", "index", "synth", "select", "train", "eval"):
        assert (project["ws"] / stage / "manifest.json").is_file(), stage
    selected = json.loads((project["ws"] / "select" / "manifest.json").read_text())["counts"]
    assert 0 < selected["general"] <= len(GENERAL_PROMPTS)  # the base model's own answers, mixed into train
    assert "Domain QA accuracy" in out and "domain" in out and "base" in out
    assert "hangjia serve --workspace" in out


def test_tuned_model_loss_fell_and_answers_changed(project):
    ws = project["ws"]
    metrics = json.loads((ws / "train" / "metrics.json").read_text())
    assert metrics["steps"] == 24
    assert metrics["val_loss_after"] < metrics["val_loss_before"] - 0.5, metrics
    answers = [json.loads(line) for line in (ws / "eval" / "answers.jsonl").read_text().splitlines()]
    base = {a["id"]: a["prediction"] for a in answers if a["model"] == "base" and not a["rag"]}
    tuned = {a["id"]: a["prediction"] for a in answers if a["model"] == "domain" and not a["rag"]}
    assert base.keys() == tuned.keys() and len(base) == 6
    changed = sum(base[k] != tuned[k] for k in base)
    assert changed >= 4, (base, tuned)
    results = json.loads((ws / "eval" / "results.json").read_text())
    assert {(c["model"], c["rag"]) for c in results["conditions"]} == {
        ("base", False),
        ("base", True),
        ("domain", False),
        ("domain", True),
    }


def test_rerun_with_unchanged_inputs_does_nothing(project):
    result = run_cli("build", "--workspace", str(project["ws"]), "--config", str(project["config"]))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("unchanged, skipped") == 6, result.stdout


def test_models_and_terminal_chat(project):
    listing = run_cli("models", "--workspace", str(project["ws"]))
    assert listing.returncode == 0 and "domain" in listing.stdout and "LoRA adapter" in listing.stdout
    chat = run_cli("chat", "--workspace", str(project["ws"]), "--max-tokens", "16", stdin="What does E24 mean?\n\n")
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert "domain>" in chat.stdout and len(chat.stdout.split("domain>", 1)[1].strip()) > 0


@pytest.fixture(scope="module")
def server(project):
    with hangjia_serve("--workspace", str(project["ws"]), "--host", "127.0.0.1", ready_s=180) as served:
        yield {"url": served.url, "port": int(served.url.rsplit(":", 1)[1])}


def test_openai_client_against_the_live_server(server):
    client = OpenAI(base_url=server["url"] + "/v1", api_key="unused", max_retries=0)
    assert {"base", "domain"} <= {m.id for m in client.models.list().data}
    ask = [{"role": "user", "content": "What does error code E24 mean on a Kestrel dishwasher?"}]
    first = client.chat.completions.create(model="domain", messages=ask, temperature=0, max_tokens=24)
    again = client.chat.completions.create(model="domain", messages=ask, temperature=0, max_tokens=24)
    assert first.choices[0].message.content == again.choices[0].message.content != ""
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    no_rag = client.chat.completions.create(
        model="domain", messages=ask, temperature=0, max_tokens=24, extra_body={"rag": False}
    )
    assert no_rag.usage.prompt_tokens < first.usage.prompt_tokens  # RAG on by default adds the passages

    stream = client.chat.completions.create(
        model="domain",
        messages=ask,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == first.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == first.usage.completion_tokens

    import openai

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=ask)


def test_port_in_use_is_one_clear_sentence(project, server):
    result = run_cli("serve", "--workspace", str(project["ws"]), "--port", str(server["port"]))
    assert result.returncode == 2
    assert f"Port {server['port']}" in result.stderr and "Traceback" not in result.stderr


def test_bad_input_gets_one_sentence_and_loses_nothing(project, tmp_path):
    ws = project["ws"]
    before = (ws / "ingest" / "manifest.json").read_text()
    missing = run_cli("ingest", "--workspace", str(ws), "--docs", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_cli("ingest", "--workspace", str(ws), "--docs", str(empty))
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  lora_rnak: 4\n")
    bad = run_cli("train", "--workspace", str(ws), "--config", str(typo))
    assert bad.returncode == 2 and "train.lora_rnak" in bad.stderr
    assert (ws / "ingest" / "manifest.json").read_text() == before
