"""Promote and rollback change what a live server answers: a real `hangjia serve` subprocess on a workspace whose
registry holds two LoRA versions that answer differently, driven by the official `openai` client from three threads
while `hangjia registry promote` and `rollback` run beside it. No request fails during the switches, each answer is
wholly one version's (the `model` field names it), requests arriving after a move get the new version within about a
second, and the exchanges the server records name the version that answered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from sqlalchemy import select

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Exchange
from hangjia.app.lineage import Provenance
from hangjia.app.registry import Registry
from hangjia.app.versions import REFRESH_S
from hangjia.core.workspace import Workspace
from hangjia.llm.weights import ModelWeights
from tests.app.conftest import hangjia_serve
from tests.tiny_models import random_lora

QUESTION = [{"role": "user", "content": "How do I reset the DW4500 dishwasher?"}]
MAX_TOKENS = 48  # ~0.1-0.3 s a request on the tiny model: requests are in flight whenever an alias moves


def _cli(*args: str, env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "hangjia", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def served(tiny_smollm_dir, tmp_path_factory):
    """A workspace trained (its train/adapter: one random LoRA) with two more LoRAs registered as domain@1 and
    domain@2 and no production alias yet, served by `hangjia serve` in a subprocess."""
    root = tmp_path_factory.mktemp("registry-serving")
    ws = Workspace(root / "ws")
    base = str(tiny_smollm_dir)
    with ws.stage("train", {}, {"base_model": base}) as run:
        random_lora(tiny_smollm_dir, run.dir / "adapter", seed=7, scale=1.0)
    serve = {"max_new_tokens": 16, "cache_size": 0}  # every request generates: nothing answered from the cache
    ws.config_path.write_text(yaml.safe_dump({"train": {"base_model": base}, "serve": serve}))
    with Registry(f"sqlite:///{ws.root / 'hangjia.db'}", ws.root) as registry:
        for n, seed in ((1, 1), (2, 2)):
            weights = ModelWeights(
                "domain", tiny_smollm_dir, random_lora(tiny_smollm_dir, root / f"lora{n}", seed, 1.0)
            )
            registry.register(Provenance(weights, {"run": n}, None), by="test")
    env = {**os.environ, "HANGJIA_CACHE": str(root / "cache")}
    env.pop("HANGJIA_DATABASE_URL", None)
    with hangjia_serve("-w", str(ws.root), env=env) as served:
        yield {"url": served.url, "ws": ws, "env": env}


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def _ask(client: openai.OpenAI, model: str, stream: bool) -> tuple[str, str]:
    """(the model the response names, the answer)."""
    if not stream:
        reply = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0)
        return reply.model, reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=MAX_TOKENS, temperature=0, stream=True
        )
    )
    models = {c.model for c in chunks}
    assert len(models) == 1, models  # every chunk of one answer names one version
    return models.pop(), "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _models(url: str) -> dict[str, dict]:
    return {m["id"]: m for m in httpx.get(f"{url}/v1/models").json()["data"]}


def test_promote_and_rollback_switch_a_live_server_without_a_failed_request(served, tmp_path):
    url, ws, env = served["url"], served["ws"], served["env"]
    client = _client(url)
    listed = _models(url)
    assert listed["domain@1"]["kind"] == "LoRA adapter" and listed["domain@1"]["loaded"] is False
    assert "registry/blobs/" in listed["domain@2"]["root"] and "version" not in listed["domain"]
    answers = {name: _ask(client, name, stream=False) for name in ("domain", "domain@1", "domain@2")}
    assert {name: model for name, (model, _) in answers.items()} == {n: n for n in answers}  # no production yet
    expected = {model: text for model, text in answers.values()}
    with pytest.raises(openai.NotFoundError, match="no alias 'candidate'"):
        _ask(client, "domain@candidate", stream=False)
    assert len(set(expected.values())) == 3, expected  # three different weights, three different answers

    results: list[dict] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        own = _client(url)
        n = 0
        while not stop.is_set():
            started = time.time()  # wall clock, to compare with the moves' commit times in the registry
            try:
                model, text = _ask(own, "domain", stream=(n + worker) % 2 == 1)
                results.append({"start": started, "end": time.time(), "model": model, "text": text})
            except Exception as exc:  # counted, never raised: the test says how many failed
                results.append({"start": started, "end": time.time(), "error": repr(exc)})
            n += 1

    threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        for command in ("promote 1", "promote 2", "rollback"):
            _cli("registry", *command.split(), "-w", str(ws.root), "--by", "tester", env=env)
            time.sleep(REFRESH_S + 2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    errors = [r for r in results if "error" in r]
    assert errors == [], errors[:3]
    for r in results:  # each answer is wholly the answer of the version it names
        assert r["text"] == expected[r["model"]], r
    with Registry(f"sqlite:///{ws.root / 'hangjia.db'}", ws.root) as registry:
        moves = [(e.at.timestamp(), f"domain@{e.to_version}") for e in registry.history(alias="production")]
    assert [target for _, target in moves] == ["domain@1", "domain@2", "domain@1"]
    timeline = [(float("-inf"), "domain"), *moves, (float("inf"), None)]
    switch_s = []
    for (at, version), (until, _) in zip(timeline, timeline[1:], strict=False):
        # Arriving over REFRESH_S (+ slack for the request's own path) after a move was committed and before the next
        # one: the new version, always. Before that, either (a server reads the aliases at most once a second).
        settled = [r for r in results if at + REFRESH_S + 0.5 < r["start"] < until]
        assert settled and {r["model"] for r in settled} == {version}, (version, {r["model"] for r in settled})
        if version == "domain@2" or at == moves[0][0]:  # new to `domain` with this move: never seen before it
            assert all(r["model"] != version for r in results if r["end"] < at)
        if at > float("-inf"):  # the server switched between the last old arrival and the first new one
            new = min(r["start"] for r in results if r["model"] == version and r["start"] > at) - at
            old = max((r["start"] for r in results if r["model"] != version and at < r["start"] < until), default=at)
            switch_s.append((round(old - at, 2), round(new, 2)))
    straddling = [r for r in results if any(r["start"] < at < r["end"] for at, _ in moves)]
    assert straddling  # some requests were in flight as an alias moved, and finished on their version

    listed = _models(url)
    assert listed["domain@production"]["version"] == "domain@1" and listed["domain"]["version"] == "domain@1"
    assert listed["domain@2"]["loaded"] is True  # the version the alias left stays loaded until the LRU needs room
    history = _cli("registry", "history", "-w", str(ws.root), env=env)
    assert history.count("tester") == 3 and "rollback" in history

    sessions = make_sessions(make_engine(f"sqlite:///{ws.root / 'hangjia.db'}"))
    with sessions() as session:
        recorded = {(e.model, e.model_version) for e in session.scalars(select(Exchange))}
    assert recorded == {("domain", "domain"), ("domain", "domain@1"), ("domain", "domain@2")} | {
        ("domain@1", "domain@1"),
        ("domain@2", "domain@2"),
    }
    summary = {
        "requests": len(results),
        "errors": len(errors),
        "in_flight_at_a_move": len(straddling),
        "by_version": {v: sum(r["model"] == v for r in results) for v in expected},
        "switched_between_seconds_after_each_commit": switch_s,
    }
    print(json.dumps(summary))
    Path(os.environ.get("HANGJIA_REGISTRY_MEASURE", tmp_path / "measure.json")).write_text(json.dumps(summary))
