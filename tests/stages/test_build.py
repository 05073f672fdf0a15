"""`build` over every stage with a tiny random model as the base: the wiring, fast."""

import json
import re
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.words import is_chinese
from hangjia.core.workspace import Workspace
from hangjia.stages.build import build
from hangjia.stages.eval import evaluate
from hangjia.stages.index import index
from hangjia.stages.ingest import ingest
from hangjia.stages.select import select
from hangjia.stages.synth import synth
from hangjia.stages.train import train
from hangjia.stages.tune import tune
from tests.paths import KESTREL, LANSHAN


@pytest.fixture
def cfg(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("dishwasher_error_codes.md", "spare_parts_prices.csv"):
        (docs / name).write_bytes((KESTREL / "docs" / name).read_bytes())
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(tiny_model_dir)
    cfg.train.max_steps = 2
    cfg.train.max_length = 512
    cfg.eval.questions = KESTREL / "questions.jsonl"
    cfg.eval.limit = 4
    cfg.eval.max_new_tokens = 4
    cfg.eval.mcq = KESTREL / "mcq.jsonl"
    general = tmp_path / "mmlu" / "test" / "anatomy_test.csv"  # MMLU's layout: dev/anatomy_dev.csv beside test/
    general.parent.mkdir(parents=True)
    general.write_text(
        "question,choice0,choice1,choice2,choice3,answer\n"
        "Which bone is in the thigh?,femur,ulna,radius,skull,0\n"
        "Which organ pumps blood?,lung,heart,liver,skin,1\n"
        "Which organ filters blood?,kidney,eye,ear,tooth,0\n"
    )
    cfg.eval.general = [general]
    cfg.eval.general_limit = 2
    return cfg


def test_build_runs_every_stage_with_a_local_model_dir_as_base(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    console = Console(quiet=True)
    results = build(ws, cfg, console)
    assert [r["stage"] for r in results] == ["ingest", "index", "synth", "select", "train", "eval"]
    assert not any(r["skipped"] for r in results)
    synth = ws.manifest("synth")["counts"]
    assert synth["pairs"] > 50 and set(synth["by_generator"]) == {"extractive", "kg"}
    sel = ws.manifest("select")["counts"]
    assert sel["train"] + sel["val"] + sel["test"] == sel["selected"] + sel["derived"] + sel["general"]
    assert sel["derived"] > sel["selected"] > 0  # paraphrases + retrieval-aware examples
    # (the forgetting guard's general pairs are checked with the real model in test_end_to_end.py: a random
    # tiny model's replies are mostly empty)
    train_rows = [json.loads(line) for line in (ws.stage_dir("select") / "train.jsonl").read_text().splitlines()]
    assert {"extractive", "paraphrase", "raft"} <= {r["generator"] for r in train_rows}
    raft = next(r for r in train_rows if r["generator"] == "raft")
    assert raft["prompt"].startswith("Context:\n[1] (") and raft["prompt"].endswith(f"Question: {raft['question']}")
    for stage in ("synth", "select"):  # each writes its report with embedded charts
        assert "data:image/png;base64," in (ws.stage_dir(stage) / "report.html").read_text()
    info = json.loads((ws.stage_dir("select") / "export" / "dataset_info.json").read_text())
    assert info["hangjia_train"]["formatting"] == "alpaca"
    assert ws.manifest("train")["counts"]["steps"] == 2
    assert (ws.stage_dir("train") / "adapter" / "adapter_model.safetensors").is_file()
    results_json = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    assert [(c["model"], c["rag"]) for c in results_json["conditions"]] == [
        ("base", False),
        ("base", True),
        ("domain", False),
        ("domain", True),
    ]
    assert all(c["total"] == 4 for c in results_json["conditions"])
    choices = {(r["set"], r["model"]): r for r in results_json["choices"]}
    assert set(choices) == {(s, m) for s in ("domain mcq", "general: anatomy") for m in ("base", "domain")}
    assert choices["domain mcq", "base"]["n"] == 30 and choices["general: anatomy", "domain"]["n"] == 2
    assert all(0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1 for r in choices.values())
    assert set(results_json["seconds"]) == {"questions", "multiple choice", "retrieval", "perplexity"}
    answers = (ws.stage_dir("eval") / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 16
    rag_rows = [json.loads(a) for a in answers if json.loads(a)["rag"]]
    assert all(row["sources"] for row in rag_rows)  # RAG answers name the passages they were given

    again = build(ws, cfg, console)
    assert all(r["skipped"] for r in again)

    from hangjia.cli.pipeline import _gate  # `hangjia eval --gate` over the stored results: its exit code

    cfg.gate.min_domain_gain = 100.0  # the tuned model must gain 100 points: it cannot
    assert _gate(ws, cfg) == 1
    assert json.loads((ws.stage_dir("eval") / "gate.json").read_text())["passed"] is False
    cfg.gate.min_domain_gain = -100.0  # may lose up to 100 points: always passes
    assert _gate(ws, cfg) == 0
    assert "gate" in (ws.stage_dir("eval") / "report.html").read_text().lower()

    # Keep this adapter as the one "in production" before retraining.
    production = tmp_path / "production"
    shutil.copytree(ws.stage_dir("train") / "adapter", production)

    cfg.train.lora_r = 8  # a config change re-runs that stage and everything downstream of it
    third = build(ws, cfg, console)
    assert [r["skipped"] for r in third] == [True, True, True, True, False, False]
    assert (ws.stage_dir("eval") / "report.html").is_file() and "retrieval" in results_json

    # vs production: the kept adapter is a third model; it must score exactly as it did when it was `domain`.
    cfg.eval.production = production
    assert evaluate(ws, cfg, console)["skipped"] is False
    with_production = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    assert [(c["model"], c["rag"]) for c in with_production["conditions"]][-2:] == [
        ("production", False),
        ("production", True),
    ]
    before = {c["rag"]: c for c in results_json["conditions"] if c["model"] == "domain"}
    for c in with_production["conditions"]:
        if c["model"] == "production":
            assert (c["accuracy"], c["by_type"]) == (before[c["rag"]]["accuracy"], before[c["rag"]]["by_type"])
    old_choices = {r["set"]: r for r in results_json["choices"] if r["model"] == "domain"}
    for r in with_production["choices"]:
        if r["model"] == "production":
            assert r["acc"] == old_choices[r["set"]]["acc"] and r["acc_norm"] == old_choices[r["set"]]["acc_norm"]
    assert {r["model"] for r in with_production["choices"]} == {"base", "domain", "production"}
    assert "production + RAG" in (ws.stage_dir("eval") / "report.html").read_text()
    cfg.gate.reference = "production"  # the retrained adapter must beat the one in service
    cfg.gate.min_domain_gain = 100.0
    assert _gate(ws, cfg) == 1
    assert json.loads((ws.stage_dir("eval") / "gate.json").read_text())["reference"] == "production"

    # eval.models: only the two the gate compares (as `hangjia retrain` does), scored as in the full run.
    cfg.eval.models = ["production", "domain"]
    assert evaluate(ws, cfg, console)["skipped"] is False
    pair = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    full = {(c["model"], c["rag"]): c["accuracy"] for c in with_production["conditions"]}
    assert {(c["model"], c["rag"]): c["accuracy"] for c in pair["conditions"]} == {
        key: acc for key, acc in full.items() if key[0] != "base"
    }
    assert {r["model"] for r in pair["choices"]} == {"domain", "production"}
    assert set(pair["perplexity"]) == {"domain", "production"}
    assert _gate(ws, cfg) == 1  # the same verdict on the same numbers
    cfg.eval.models = None
    cfg.eval.production = None
    cfg.eval.models = ["production"]
    with pytest.raises(HangjiaError, match="eval.models names production"):
        evaluate(ws, cfg, console)
    cfg.eval.models, cfg.eval.production = None, production

    # k-shot general knowledge: a missing dev file is named before any model loads; then its first row is the shot.
    cfg.eval.general_shots = 1
    with pytest.raises(HangjiaError, match="dev file"):
        evaluate(ws, cfg, console)
    dev = cfg.eval.general[0].parent.parent / "dev" / "anatomy_dev.csv"
    dev.parent.mkdir()
    dev.write_text("Which bone is in the arm?,ulna,femur,tibia,skull,A\nWhich organ breathes?,lung,eye,ear,skin,A\n")
    assert evaluate(ws, cfg, console)["skipped"] is False
    shot_rows = json.loads((ws.stage_dir("eval") / "results.json").read_text())["choices"]
    assert {(r["set"], r["shots"]) for r in shot_rows} == {("domain mcq", 0), ("general: anatomy", 1)}
    from hangjia.eval.mcq import evaluate_mcq, load_mcq_csv
    from hangjia.llm.models import load_causal_lm, load_tokenizer

    base, tokenizer = load_causal_lm(Path(cfg.train.base_model)), load_tokenizer(Path(cfg.train.base_model))
    direct = evaluate_mcq(base, tokenizer, load_mcq_csv(cfg.eval.general[0])[:2], 1, load_mcq_csv(dev))
    row = next(r for r in shot_rows if r["set"] == "general: anatomy" and r["model"] == "base")
    assert (row["acc"], row["acc_norm"], row["n"]) == (direct["acc"], direct["acc_norm"], 2)
    cfg.eval.general_shots = 0

    cfg.eval.production = tmp_path / "docs"  # neither an adapter nor a model
    with pytest.raises(HangjiaError, match="neither an adapter"):
        evaluate(ws, cfg, console)


def test_a_failing_stage_keeps_the_previous_output(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    console = Console(quiet=True)
    ingest(ws, cfg, console)
    index(ws, cfg, console)
    synth(ws, cfg, console)
    cfg.select.quality = "none"
    cfg.select.general_ratio = 0.0
    select(ws, cfg, console)
    before = (ws.stage_dir("select") / "train.jsonl").read_text()
    cfg.train.base_model = str(tmp_path / "no-such-model")
    with pytest.raises(HangjiaError):
        train(ws, cfg, console)
    assert ws.manifest("train") is None
    assert (ws.stage_dir("select") / "train.jsonl").read_text() == before


def test_train_says_its_size_first_and_its_time_left_after_five_steps(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    quiet = Console(quiet=True)
    for stage in (ingest, index, synth):
        stage(ws, cfg, quiet)
    cfg.select.quality = "none"
    cfg.select.raft = False
    cfg.select.paraphrases = 0
    cfg.select.general_ratio = 0.0
    select(ws, cfg, quiet)
    cfg.train.max_steps = 7
    cfg.train.batch_size = 2
    console = Console(record=True, width=200)
    train(ws, cfg, console)
    text = console.export_text()
    examples = len((ws.stage_dir("select") / "train.jsonl").read_text().splitlines())
    assert f"train: {examples} examples, {cfg.train.epochs:g} epoch(s) of batch 2" in text
    assert re.search(r"train: 7 steps, about \d+ min left at this pace", text)


def test_ingest_on_ray_makes_the_same_dataset_versions_as_in_process(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    console = Console(quiet=True)
    local = ingest(ws, cfg, console)["counts"]
    cfg.ingest.engine = "ray"
    on_ray = ingest(ws, cfg, console)
    assert not on_ray["skipped"]
    assert on_ray["counts"]["documents_dataset"] == local["documents_dataset"]
    assert on_ray["counts"]["chunks_dataset"] == local["chunks_dataset"]


# The child: `hangjia train`, SIGKILLed by itself right after the Trainer reports checkpoint 4 saved. Waiting for
# the checkpoint from outside raced a fast machine, which could finish all 8 steps between two polls.
_KILLED_AFTER_CHECKPOINT_4 = """
import os, runpy, signal, sys
from transformers.trainer_callback import CallbackHandler

saved = CallbackHandler.on_save

def on_save(self, args, state, control, **kwargs):
    control = saved(self, args, state, control, **kwargs)
    if state.global_step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return control

CallbackHandler.on_save = on_save
sys.argv = ["hangjia", *sys.argv[1:]]
runpy.run_module("hangjia", run_name="__main__")
"""


def test_train_resumes_after_kill_9(cfg, tmp_path):
    """`hangjia train` killed with SIGKILL after a checkpoint; `--resume` finishes the run from it."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    ws = Workspace(tmp_path / "ws")
    console = Console(quiet=True)
    cfg.select.quality, cfg.select.general_ratio, cfg.select.raft = "none", 0.0, False
    for stage in (ingest, synth, select):
        stage(ws, cfg, console)
    config = tmp_path / "resume.yaml"
    settings = cfg.model_dump(mode="json", include={"docs", "ingest", "synth", "select", "train"})
    settings["train"].update(max_steps=8, save_steps=2, batch_size=2)
    config.write_text(yaml.safe_dump(settings))
    arguments = ["train", "-w", str(ws.root), "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_CHECKPOINT_4, *arguments], env=env, capture_output=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    checkpoints = ws.root / ".staging" / "train" / "checkpoints"
    assert (checkpoints / "checkpoint-4" / "trainer_state.json").is_file()
    assert ws.manifest("train") is None  # nothing committed by the killed run

    resumed = subprocess.run(
        [sys.executable, "-m", "hangjia", *arguments, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    metrics = ws.manifest("train")["counts"]
    assert metrics["steps"] == 8 and metrics["resumed_from_step"] == 4
    logged = [
        json.loads(line)["step"] for line in (ws.stage_dir("train") / "trainer_log.jsonl").read_text().splitlines()
    ]
    assert logged == list(range(1, 9))  # every step once: none lost, none repeated


def test_tune_writes_results_and_best_config_and_a_rerun_adds_nothing(cfg, tmp_path):
    import yaml

    ws = Workspace(tmp_path / "ws")
    console = Console(quiet=True)
    cfg.select.quality, cfg.select.general_ratio, cfg.select.raft = "none", 0.0, False
    for stage in (ingest, synth, select):
        stage(ws, cfg, console)
    cfg.train.max_steps = 2
    cfg.tune.n_trials, cfg.tune.epochs, cfg.tune.lora_r = 2, [1.0], [4, 8]
    first = tune(ws, cfg, console)
    assert first["counts"]["trials"] == 2 and first["counts"]["ran_now"] == 2
    best = yaml.safe_load((ws.stage_dir("tune") / "best.yaml").read_text())["train"]
    rows = (ws.stage_dir("tune") / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and best["lora_r"] in (4, 8) and best["max_steps"] == 2
    again = tune(ws, cfg, console)
    assert again["skipped"] and again["counts"]["ran_now"] == 0


def test_build_on_the_chinese_sample_domain_speaks_chinese_throughout(tiny_model_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("fault_codes.md", "spare_parts_prices.csv"):
        (docs / name).write_bytes((LANSHAN / "docs" / name).read_bytes())
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(tiny_model_dir)
    cfg.train.max_steps = 2
    cfg.train.max_length = 512
    cfg.eval.questions = LANSHAN / "questions.jsonl"
    cfg.eval.limit = 6
    cfg.eval.max_new_tokens = 4
    ws = Workspace(tmp_path / "ws")
    build(ws, cfg, Console(quiet=True))
    train_rows = [json.loads(line) for line in (ws.stage_dir("select") / "train.jsonl").read_text().splitlines()]
    domain = [r for r in train_rows if r["generator"] != "general"]
    assert sum(is_chinese(r["question"]) for r in domain) >= 0.9 * len(domain)
    raft = [r for r in domain if r["generator"] == "raft"]
    assert raft and all(r["prompt"].startswith("参考资料：\n[1] (") for r in raft)
    assert all(r["prompt"].endswith(f"问题：{r['question']}") for r in raft)
    assert {r["answer"] for r in raft if r["kind"] == "raft_abstain"} <= {"我不知道"}
    leads = ("请问", "你好", "想问", "麻烦", "我想", "打扰")
    assert any(r["generator"] == "paraphrase" and r["question"].startswith(leads) for r in domain)
    results = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    assert results["retrieval"]["overall"]["n"] > 0 and len(results["conditions"]) == 4
