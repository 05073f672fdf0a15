"""Recorded answers, feedback on them, and an A/B test: routing, and a run of simulated users whose scripted judgements
favour one version, through a live server and the official `openai` client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from openai import OpenAI
from scipy import stats
from sqlalchemy import select
from typer.testing import CliRunner

from hangjia.app import ab
from hangjia.app.db.models import Exchange, Feedback
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import ExchangeStore
from hangjia.cli import app as cli
from hangjia.core.config import ABConfig
from hangjia.llm.generation import Engine
from tests.app.conftest import live_server
from tests.tiny_models import random_lora

QUESTIONS = ["How do I reset the DW4500 dishwasher?", "What does error E24 mean?", "Which detergent should I use?"]


def test_a_share_of_users_is_routed_and_each_user_stays_on_one_side():
    config = ABConfig(model="domain", candidate="domain@candidate", share=0.2)
    users = [f"user-{i}" for i in range(1000)]
    sides = [ab.route(config, "domain", u) for u in users]
    treated = sides.count("domain@candidate")
    # 99.9% binomial bounds around 200 of 1000.
    low, high = stats.binom.ppf([0.0005, 0.9995], 1000, 0.2)
    assert low <= treated <= high
    assert [ab.route(config, "domain", u) for u in users] == sides  # sticky, across calls (no state kept)
    assert ab.route(config, "base", "user-1") == "base"  # another name is never split
    assert ab.route(config, "domain", None) == "domain"  # no user: no side to keep, so the model
    assert ab.route(None, "domain", "user-1") == "domain"
    reshuffled = [ab.route(config.model_copy(update={"salt": "next test"}), "domain", u) for u in users]
    assert reshuffled != sides  # a new salt draws new groups


@pytest.fixture(scope="module")
def engine(tiny_smollm_dir, tmp_path_factory):
    """base and a strong LoRA `domain` on the tiny model: two versions that answer differently."""
    domain = random_lora(tiny_smollm_dir, tmp_path_factory.mktemp("ab") / "domain", seed=1, scale=1.0)
    engine = Engine(tiny_smollm_dir, domain)
    yield engine
    engine.close()


@pytest.fixture
def store(db_url):
    upgrade(db_url)
    store = ExchangeStore(db_url)
    yield store
    store.close()


def test_answers_are_recorded_and_feedback_refers_to_them(engine, store, db_url):
    with live_server(engine, store) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        ask = [{"role": "user", "content": "Call me on 13812345678 about E24"}]
        reply = client.chat.completions.create(model="base", messages=ask, temperature=0, max_tokens=8, user="ana")
        exchange_id = reply.model_extra["exchange_id"]
        chunks = list(
            client.chat.completions.create(
                model="domain", messages=ask, temperature=0, max_tokens=8, user="ana", stream=True
            )
        )
        streamed_id = next(c.model_extra["exchange_id"] for c in chunks if c.model_extra.get("exchange_id"))
        good = {"exchange_id": exchange_id, "kind": "thumbs", "thumbs": False, "reason": "wrong", "user": "ana"}
        made = httpx.post(f"{url}/v1/feedback", json=good)
        assert made.status_code == 201
        fix = {"exchange_id": streamed_id, "kind": "correction", "corrected_answer": "Reset it; ring 13812345678."}
        assert httpx.post(f"{url}/v1/feedback", json=fix).status_code == 201
        pick = {"exchange_id": exchange_id, "kind": "preference", "chosen_exchange_id": streamed_id}
        pick["rejected_exchange_id"] = exchange_id
        assert httpx.post(f"{url}/v1/feedback", json=pick).status_code == 201
        # Bad input: a 4xx that says what is wrong, and nothing stored.
        no_reason_up = {"exchange_id": exchange_id, "kind": "thumbs", "thumbs": True, "reason": "wrong"}
        refused = httpx.post(f"{url}/v1/feedback", json=no_reason_up)
        assert refused.status_code == 400 and "reason on thumbs down" in refused.json()["error"]["message"]
        missing = httpx.post(f"{url}/v1/feedback", json={"exchange_id": 999999, "kind": "rating", "rating": 3})
        assert missing.status_code == 404 and "999999" in missing.json()["error"]["message"]
        assert httpx.post(f"{url}/v1/feedback", json={"exchange_id": exchange_id, "kind": "rating"}).status_code == 400
        assert (
            httpx.post(f"{url}/v1/feedback", json={"exchange_id": 1, "kind": "rating", "rating": 9}).status_code == 400
        )
    with store.sessions() as session:
        rows = {e.id: e for e in session.scalars(select(Exchange))}
        assert {rows[exchange_id].model_version, rows[streamed_id].model_version} == {"base", "domain"}
        assert "13812345678" not in json.dumps(rows[exchange_id].messages, ensure_ascii=False)  # redacted, as ingest
        assert rows[exchange_id].latency_ms > 0 and rows[exchange_id].answer == reply.choices[0].message.content
        kinds = sorted(f.kind for f in session.scalars(select(Feedback)))
        assert kinds == ["correction", "preference", "thumbs"]
        correction = session.scalar(select(Feedback).where(Feedback.kind == "correction"))
        assert "13812345678" not in correction.corrected_answer


def test_simulated_users_who_prefer_the_candidate_make_the_report_say_so(engine, store, db_url, tmp_path):
    """80 users; a third see the candidate (`domain`), the rest the model (`base`). Each asks two questions and
    judges the answer by a script: thumbs up 80% of the time for the candidate's, 35% for the model's."""
    config = {"model": "base", "candidate": "domain", "share": 0.35}
    rng = random.Random(0)
    seen = {"base": 0, "domain": 0}
    with live_server(engine, store, ab=config) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for i in range(80):
            user = f"user-{i}"
            for question in QUESTIONS[:2]:
                ask = [{"role": "user", "content": question}]
                reply = client.chat.completions.create(
                    model="base", messages=ask, temperature=0, max_tokens=4, user=user
                )
                side = reply.model  # the version that answered
                seen[side] += 1
                liked = rng.random() < (0.8 if side == "domain" else 0.35)
                body = {
                    "exchange_id": reply.model_extra["exchange_id"],
                    "kind": "thumbs",
                    "thumbs": liked,
                    "user": user,
                }
                assert httpx.post(f"{url}/v1/feedback", json=body).status_code == 201
    assert seen["domain"] > 20 and seen["base"] > 60
    (tmp_path / "hangjia.yaml").write_text(json.dumps({"serve": {"ab": config}, "database": {"url": db_url}}))
    result = CliRunner().invoke(
        cli,
        [
            "ab",
            "report",
            "-w",
            str(tmp_path),
            "--config",
            str(tmp_path / "hangjia.yaml"),
            "--json",
            str(tmp_path / "ab.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ab.json").read_text())
    control, candidate = report["arms"]
    assert (control["version"], candidate["version"]) == ("base", "domain")
    assert control["exchanges"] + candidate["exchanges"] == 160
    assert candidate["thumbs_up"]["value"] > control["thumbs_up"]["value"]
    assert report["p_values"]["thumbs_up"] < 0.001 and report["verdict"] == "better"
    assert "domain is significantly better than the model" in " ".join(result.output.split())


def test_concurrent_writers_new_users_included_lose_nothing(store):
    """The server records from many threads at once; on SQLite a transaction that read first could not write."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> int:
        ask = [{"role": "user", "content": f"question {i}"}]
        return store.record(
            model="domain", version="domain", messages=ask, passages=[], answer="a", latency_ms=1, user=f"u{i % 7}"
        )

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(one, range(80)))
    assert len(set(ids)) == 80
    with store.sessions() as session:
        assert set(session.scalars(select(Exchange.id))) >= set(ids)


def _registry_ab(store, db_url, tmp_path, liked: dict[int, float]):
    """Versions 1 (production) and 2 (candidate) in the registry, 60 answers each recorded as the server records an
    A/B test's (asked `domain`, answered `domain@N`), thumbs up with the given chance per version; the config file."""
    from hangjia.app.db.models import ModelVersion, RegisteredModel
    from hangjia.app.registry import Registry

    with store.sessions.begin() as s:
        s.add(RegisteredModel(name="domain"))
        s.flush()
        for n in (1, 2):
            s.add(
                ModelVersion(
                    model="domain",
                    version=n,
                    kind="lora",
                    digest=f"{n:064}",
                    weights=str(tmp_path / str(n)),
                    base_model="tiny",
                    base_digest="0" * 64,
                    lineage={},
                    lineage_digest="0" * 64,
                    created_by="test",
                )
            )
    registry = Registry(db_url, tmp_path)
    registry.promote(1, by="test")
    registry.promote(2, alias="candidate", by="test")
    rng = random.Random(1)
    for n, chance in liked.items():
        for i in range(60):
            ask = [{"role": "user", "content": QUESTIONS[i % 3]}]
            exchange = store.record(
                model="domain", version=f"domain@{n}", messages=ask, passages=[], answer="a", latency_ms=9, user=f"u{i}"
            )
            store.feedback({"exchange_id": exchange, "kind": "thumbs", "thumbs": rng.random() < chance}, f"u{i}")
    config = {"serve": {"ab": {"model": "domain", "candidate": "domain@candidate", "share": 0.5}}}
    (tmp_path / "hangjia.yaml").write_text(json.dumps({**config, "database": {"url": db_url}}))
    return registry


def test_a_better_registry_candidate_is_promoted_and_a_worse_one_stopped(store, db_url, tmp_path):
    registry = _registry_ab(store, db_url, tmp_path, {1: 0.3, 2: 0.85})
    args = ["ab", "report", "-w", str(tmp_path), "--config", str(tmp_path / "hangjia.yaml"), "--act"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "domain@2 to production" in " ".join(result.output.split())
    assert registry.aliases()["production"].version == 2
    # Now production and candidate are the same version: nothing more to decide.
    again = CliRunner().invoke(cli, args)
    assert "nothing to do" in again.output and registry.aliases()["production"].version == 2
    assert "both answer with domain@2 now" in " ".join(again.output.split())
    assert "p=" not in again.output  # no test of a version against itself
    registry.close()


def test_a_worse_registry_candidate_is_stopped(store, db_url, tmp_path):
    registry = _registry_ab(store, db_url, tmp_path, {1: 0.85, 2: 0.3})
    args = ["ab", "report", "-w", str(tmp_path), "--config", str(tmp_path / "hangjia.yaml"), "--act"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "stopped the test" in result.output
    aliases = registry.aliases()
    assert (aliases["production"].version, aliases["candidate"].version) == (1, 1)
    assert [e.action for e in registry.history(alias="candidate")][-1] == "promote"
    registry.close()


def test_the_report_counts_only_the_period_asked_for(store):
    """`ab report --days`: answers from before the test began (another period, another test) stay out."""
    asked = [{"role": "user", "content": QUESTIONS[0]}]
    ids = [
        store.record(model="base", version="base", messages=asked, passages=[], answer="a", latency_ms=1, user="u")
        for _ in range(3)
    ]
    with store.sessions.begin() as session:
        session.get(Exchange, ids[0]).created_at = datetime.now(UTC) - timedelta(days=10)
    with store.sessions() as session:
        assert ab.collect(session, "base")["base"].exchanges == 3
        assert ab.collect(session, "base", since=datetime.now(UTC) - timedelta(days=1))["base"].exchanges == 2
