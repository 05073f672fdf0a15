"""`hangjia retrain` on a real (tiny) build: accepted feedback → an incremental candidate (production's adapter trained
further), DPO on the correction, eval against production, registry version with lineage to the feedback, promotion
only when the gate passes; nothing to do when production already learned everything."""

from __future__ import annotations

import json
import random
import shlex

import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from hangjia.app.db.models import User
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.lineage import provenance
from hangjia.app.registry import CANDIDATE, PRODUCTION, Registry, tree_digest
from hangjia.app.retrain import KEPT, NOTHING_NEW, PROMOTED, retrain
from hangjia.app.review import decide
from hangjia.cli import app
from hangjia.core.config import GateConfig
from hangjia.core.jsonl import read_jsonl
from hangjia.core.workspace import Workspace
from hangjia.stages.build import build
from tests.app.test_registry import tiny_build_config
from tests.eval.test_drift import arc_questions
from tests.paths import KESTREL, KESTREL_DOCS, REPO

QUESTION = "A Kestrel dishwasher stops and shows code E24. What fault does this code stand for?"


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    """A tiny kestrel build registered as production (domain@1), with a user's accepted correction waiting."""
    root = tmp_path_factory.mktemp("retrain")
    docs = root / "docs"
    docs.mkdir()
    (docs / "dishwasher_error_codes.md").write_bytes((KESTREL_DOCS / "dishwasher_error_codes.md").read_bytes())
    cfg = tiny_build_config(tiny_model_dir, docs)
    cfg.eval.questions = KESTREL / "questions.jsonl"
    cfg.eval.limit = 3
    cfg.eval.max_new_tokens = 4
    cfg.retrain.replay = 8
    cfg.retrain.gate = GateConfig(reference=PRODUCTION, min_domain_gain_rag=-100.0)
    cfg.preference.max_steps = 1
    url = f"sqlite:///{root / 'hangjia.db'}"
    cfg.database.url = url
    ws = Workspace(root / "ws")
    build(ws, cfg, Console(quiet=True))
    with Registry(url, ws.root) as registry:
        registry.register(provenance(ws, cfg.train.base_model), alias=PRODUCTION, by="ana")
    store = ExchangeStore(url)
    with store.sessions.begin() as s:
        s.add_all([User(username="rita", password_hash="x", role="reviewer"), User(username="uma", password_hash="x")])
    yield ws, cfg, url, store
    store.close()


def correct(store: ExchangeStore, question: str, answer: str, correction: str) -> int:
    """A user asks, gets `answer`, corrects it; a reviewer accepts the correction. The feedback id."""
    passage = {"index": 1, "source": "dishwasher_error_codes.md", "text": "E24: drain pump blocked.", "cited": False}
    exchange = store.record(
        model="domain",
        version="domain@1",
        messages=[{"role": "user", "content": question}],
        passages=[passage],
        answer=answer,
        latency_ms=5,
        user="uma",
    )
    fb = store.feedback({"exchange_id": exchange, "kind": "correction", "corrected_answer": correction}, "uma")
    with store.sessions.begin() as s:
        decide(s, fb, "rita", "accepted")
    return fb


def test_accepted_corrections_make_a_promoted_candidate_that_traces_back_to_them(served):
    ws, cfg, url, store = served
    fb = correct(store, QUESTION, "E24 is a door fault.", "The drain pump is blocked [1].")
    with Registry(url, ws.root) as registry:
        v1 = registry.version(1)
        v1_digest = tree_digest(registry.weights(v1))

    result = retrain(ws, cfg, Console(quiet=True), url, by="ana")

    assert result.outcome == PROMOTED, result.why
    assert (result.production, result.candidate, result.mode) == (1, 2, "incremental")
    train = ws.manifest("train")
    # Incremental: production's adapter, trained on the replayed pairs plus the correction three times.
    assert train["inputs"]["start_from"] == v1_digest
    assert train["counts"]["feedback_examples"] == 1
    assert train["counts"]["train_examples"] == cfg.retrain.replay + cfg.retrain.feedback_repeats
    # DPO learned the correction over the answer it replaced, and eval compared with production.
    assert ws.manifest("dpo")["inputs"]["feedback_dpo"] == result.feedback["feedback_dpo"]["ref"]
    # Only the two models the gate compares are evaluated: no time spent on base.
    results = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    assert {c["model"] for c in results["conditions"]} == {"domain", PRODUCTION}
    measures = {r["measure"]: r for r in result.comparison}
    assert set(measures) >= {"domain QA accuracy, RAG on", "domain QA accuracy, RAG off"}
    # The one evaluation question the correction answered, apart from the two it did not: together, the whole set.
    taught = measures["domain QA accuracy, RAG on: the 1 question the feedback answered"]
    others = measures["domain QA accuracy, RAG on: the 2 questions no feedback answered"]
    whole = measures["domain QA accuracy, RAG on"]
    for side in ("candidate", "production"):
        assert (taught[side] + 2 * others[side]) / 3 == pytest.approx(whole[side], abs=0.1)
    with Registry(url, ws.root) as registry:
        v2 = registry.version(2)
        aliases = {name: a.version for name, a in registry.aliases().items()}
        assert aliases == {PRODUCTION: 2, CANDIDATE: 2}
        assert v2.lineage["datasets"]["feedback_sft"] == result.feedback["feedback_sft"]["ref"]
        assert v2.lineage["datasets"]["feedback_dpo"] == result.feedback["feedback_dpo"]["ref"]
        assert v2.evaluation["gate"]["passed"] and v2.digest != v1.digest
        assert registry.history(alias=PRODUCTION)[-1].note == "hangjia retrain: gate passed against domain@1"
    report = result.report.read_text(encoding="utf-8")
    assert "# hangjia retrain: promoted" in report and "feedback_sft: 1 rows" in report
    assert "the 1 question the feedback answered" in report and "partly memorisation" in report
    sft = json.loads(result.report.with_suffix(".json").read_text())["feedback"]["feedback_sft"]
    assert sft["rows"] == 1 and fb > 0

    # `domain` is production's version for the terminal too, as for the server.
    config = ws.root / "retrain.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
    listed = CliRunner().invoke(app, ["models", "-w", str(ws.root), "-c", str(config)])
    assert "domain@2 (the registry's production" in listed.output, listed.output
    # The registry lists domain@2 (made by DPO last) with the loss of the SFT it started from.
    registered = CliRunner().invoke(app, ["registry", "ls", "-w", str(ws.root), "-c", str(config)])
    assert f"{train['counts']['final_train_loss']:.3f}" in registered.output, registered.output
    chat = ["chat", "-w", str(ws.root), "-c", str(config), "--max-tokens", "2"]
    chatted = CliRunner().invoke(app, chat, input="What does E24 mean?\n\n")
    assert chatted.exit_code == 0 and "domain is domain@2, the registry's production version" in chatted.output

    again = retrain(ws, cfg, Console(quiet=True), url, by="ana")
    assert again.outcome == NOTHING_NEW and "already learned" in again.why and again.candidate is None


def test_a_failed_gate_keeps_production_and_the_cli_exits_1(served, tmp_path):
    ws, cfg, url, store = served
    correct(store, "What does E11 mean on a Kestrel dishwasher?", "A full tank.", "A water inlet fault [1].")
    strict = cfg.model_copy(deep=True)
    strict.retrain.gate = GateConfig(reference=PRODUCTION, min_domain_gain_rag=50.0)  # unreachable
    with Registry(url, ws.root) as registry:
        before = registry.aliases()[PRODUCTION].version
    config = tmp_path / "hangjia.yaml"
    config.write_text(json.dumps(strict.model_dump(mode="json")), encoding="utf-8")

    run = CliRunner().invoke(app, ["retrain", "-w", str(ws.root), "-c", str(config), "--by", "ana"])

    assert run.exit_code == 1, run.output
    assert f"{KEPT}: the gate failed, so production stays at domain@{before}" in " ".join(run.output.split())
    with Registry(url, ws.root) as registry:
        aliases = registry.aliases()
        assert aliases[PRODUCTION].version == before
        assert aliases[CANDIDATE].version == before + 1


def served_questions(store: ExchangeStore, questions: list[str]) -> None:
    for q in questions:
        store.record(
            model="domain",
            version="domain@1",
            messages=[{"role": "user", "content": q}],
            passages=[],
            answer="…",
            latency_ms=5,
            user="uma",
        )


def test_if_drift_retrains_only_once_the_served_questions_drifted(served, tmp_path):
    ws, cfg, url, store = served
    config = tmp_path / "hangjia.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")), encoding="utf-8")
    reports = lambda: sorted((ws.root / "retrain").glob("*.json"))  # noqa: E731
    trained = [r["question"] for r in read_jsonl(ws.stage_dir("select") / "train.jsonl")]
    served_questions(store, random.Random(0).sample(trained, 30))
    before = reports()
    command = ["retrain", "-w", str(ws.root), "-c", str(config), "--if-drift", "--days", "1", "--by", "ana"]

    calm = CliRunner().invoke(app, command)

    assert calm.exit_code == 0, calm.output
    assert "nothing retrained" in calm.output and reports() == before
    served_questions(store, arc_questions(60))  # science exam questions: not what kestrel's users ask

    shifted = CliRunner().invoke(app, command)

    assert "drift detected: retraining" in shifted.output, shifted.output
    assert shifted.exit_code in (0, 1) and "retrain:" in shifted.output


def test_the_retrain_cronjob_calls_retrain_with_options_it_has():
    """deploy/k8s/retrain-cronjob.yaml: a CronJob running `hangjia retrain --if-drift` with real options, failing
    (no retry) on exit 1, the gate kept production, and 2, a user error."""
    job = yaml.safe_load((REPO / "deploy" / "k8s" / "retrain-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob"
    spec = job["spec"]["jobTemplate"]["spec"]
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [1, 2]
    script = spec["template"]["spec"]["containers"][0]["args"][0]
    call = shlex.split(next(line for line in script.splitlines() if line.strip().startswith("hangjia retrain")))
    known = {opt for p in typer.main.get_command(app).commands["retrain"].params for opt in p.opts}
    assert "--if-drift" in call and {a for a in call if a.startswith("-")} <= known
