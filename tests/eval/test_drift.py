"""Drift: a shifted question set is flagged, a resampled one is not (kestrel questions against ARC science questions,
the real all-MiniLM-L6-v2 and a BM25 index of the kestrel documents); the rates over served exchanges; the command's
exit codes, chart and Prometheus file."""

from __future__ import annotations

import csv
import json
import random
import shlex
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from hangjia.cli import app, main
from hangjia.core.config import DriftConfig, ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import read_jsonl, write_jsonl
from hangjia.core.workspace import Workspace
from hangjia.corpus.index import BM25Index
from hangjia.eval.drift import (
    DRIFT_EXIT,
    Exchange,
    detect_drift,
    load_exchanges,
    load_questions,
    rise_p_value,
    windows,
)
from hangjia.llm.retrieval import embed_function
from hangjia.stages.drift import reference_questions
from hangjia.stages.index import index
from hangjia.stages.ingest import ingest
from tests.paths import KESTREL, LANSHAN, REPO, SHARED

ARC = SHARED / "benchmarks" / "arc" / "ARC-Easy-Test.jsonl"
CMMLU = SHARED / "benchmarks" / "cmmlu" / "test"


def kestrel_questions() -> list[str]:
    """The 80 QA and 30 multiple-choice questions of the sample domain, written by people (not synthesised)."""
    return [r["question"] for name in ("questions.jsonl", "mcq.jsonl") for r in read_jsonl(KESTREL / name)]


def split(questions: list[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """A random half as reference, the other half as 'recent': two samples of one distribution."""
    shuffled = random.Random(seed).sample(questions, len(questions))
    return shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2 :]


def arc_questions(n: int) -> list[str]:
    rows = read_jsonl(ARC)
    return [r["question"]["stem"] for r in random.Random(0).sample(rows, n)]


@pytest.fixture(scope="module")
def kestrel_ws(tiny_model_dir, tmp_path_factory) -> Workspace:
    """Kestrel ingested and indexed (BM25), chunked by the tiny model's tokenizer."""
    cfg = ProjectConfig(docs=KESTREL / "docs")
    cfg.train.base_model = str(tiny_model_dir)
    ws, console = Workspace(tmp_path_factory.mktemp("drift") / "ws"), Console(quiet=True)
    ingest(ws, cfg, console)
    index(ws, cfg, console)
    return ws


@pytest.fixture(scope="module")
def scores(kestrel_ws):
    return BM25Index.load(kestrel_ws.stage_dir("index")).scores


@pytest.fixture(scope="module")
def embed():
    """all-MiniLM-L6-v2, loaded once for the module."""
    return embed_function()


def test_resampled_questions_are_not_flagged_and_shifted_ones_are(scores, embed):
    reference, recent = split(kestrel_questions())
    same = detect_drift(reference, recent, scores, embed, DriftConfig())
    emb, ood = same.signal("embedding"), same.signal("out_of_domain")
    assert same.representation == "all-MiniLM-L6-v2" and not same.drifted and same.exit_code == 0
    assert emb.p_value > 0.05 and ood.p_value > 0.05

    shifted = detect_drift(reference, arc_questions(55), scores, embed, DriftConfig())
    emb, ood = shifted.signal("embedding"), shifted.signal("out_of_domain")
    assert shifted.drifted and shifted.exit_code == DRIFT_EXIT
    assert emb.drifted and emb.p_value == pytest.approx(1 / 1001) and emb.value > 2 * emb.reference
    assert ood.drifted and ood.value > 0.5 and ood.p_value == pytest.approx(1 / 1001)
    # Same inputs, same seed: the same p-values.
    again = detect_drift(reference, arc_questions(55), scores, embed, DriftConfig())
    assert again.signal("embedding") == shifted.signal("embedding")


def test_a_partly_shifted_set_is_flagged_by_the_embedding_test(scores, embed):
    """A third of the traffic off-topic: fewer questions stand out, the distribution still moved."""
    reference, recent = split(kestrel_questions())
    mixed = recent[:36] + arc_questions(18)
    report = detect_drift(reference, mixed, scores, embed, DriftConfig())
    assert report.signal("embedding").drifted and report.signal("out_of_domain").value > 0.2


def test_too_few_recent_questions_are_shown_but_not_tested(scores, embed):
    reference, _ = split(kestrel_questions())
    report = detect_drift(reference, arc_questions(5), scores, embed, DriftConfig())
    assert not report.drifted and all(s.p_value is None and "too few" in s.note for s in report.signals)


def test_chinese_questions_are_compared_as_terms_not_minilm(scores):
    """MiniLM is English-only: Chinese sets take the term vectors (and need no embedder)."""
    lanshan = [r["question"] for r in read_jsonl(LANSHAN / "questions.jsonl")]
    reference, recent = split(lanshan)
    with open(CMMLU / "agronomy.csv", encoding="utf-8") as fh:
        general = [row["Question"] for row in csv.DictReader(fh)][:30]
    # (the kestrel index scores them all 0, so only the embedding signal means anything here)
    same = detect_drift(reference, recent, scores, None, DriftConfig())
    shifted = detect_drift(reference, general, scores, None, DriftConfig())
    assert same.representation == shifted.representation == "terms"
    assert same.signal("embedding").p_value > 0.05 and shifted.signal("embedding").p_value < 0.01


def test_rise_test_against_a_known_value():
    # 10/100 before, 25/100 now: pooled 0.175, z = 0.15 / sqrt(0.175 · 0.825 · 0.02) = 2.791, one-sided p = 0.00263.
    assert rise_p_value(10, 100, 25, 100) == pytest.approx(0.00263, abs=1e-5)
    assert rise_p_value(25, 100, 10, 100) > 0.99


def exchanges(weeks: int, per_week: int, abstain: list[float], down: list[float]) -> list[dict]:
    """Served exchanges, `per_week` a week; week i abstains on abstain[i] of them and has down[i] thumbs down among
    its rated half (exact counts, no randomness)."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = []
    for week in range(weeks):
        for i in range(per_week):
            rated = i % 2 == 0
            rows.append(
                {
                    "question": f"q{week}-{i}",
                    "answer": "The documents do not say." if i < abstain[week] * per_week else "an answer",
                    "abstained": i < abstain[week] * per_week,
                    "thumbs": (-1 if i // 2 < down[week] * per_week / 2 else 1) if rated else None,
                    "created_at": (start + timedelta(days=7 * week, hours=1 + i)).isoformat(),
                }
            )
    return rows


def test_rising_abstentions_and_thumbs_down_are_flagged_steady_rates_are_not(scores, embed, tmp_path):
    reference, recent = split(kestrel_questions())
    steady = tmp_path / "steady.jsonl"
    write_jsonl(steady, exchanges(4, 80, [0.1] * 4, [0.1] * 4))
    rising = tmp_path / "rising.jsonl"
    write_jsonl(rising, exchanges(4, 80, [0.1, 0.1, 0.1, 0.4], [0.1, 0.1, 0.1, 0.5]))

    rows = load_exchanges(steady)
    assert [w.exchanges for w in windows(rows, 7)] == [80, 80, 80, 80]
    report = detect_drift(reference, recent, scores, embed, DriftConfig(), rows)
    assert not report.drifted and report.signal("abstention").p_value == pytest.approx(0.5)

    report = detect_drift(reference, recent, scores, embed, DriftConfig(), load_exchanges(rising))
    abstention, negative = report.signal("abstention"), report.signal("negative_feedback")
    assert abstention.drifted and abstention.value == pytest.approx(0.4) and abstention.reference == pytest.approx(0.1)
    assert negative.drifted and negative.value == pytest.approx(0.5) and negative.n == 40
    assert not report.signal("embedding").drifted  # the questions did not change, the answers did


def test_exchange_windows_end_at_the_newest_row():
    t = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [Exchange("q", False, 0, t - timedelta(days=d)) for d in (0, 1, 6.9, 7.1, 20)]
    assert [w.exchanges for w in windows(rows, 7)] == [1, 1, 3]


def test_questions_files_jsonl_or_text_and_errors(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"question": "What is E24?"}\n\n{"question": " Why  so? "}\n')
    (tmp_path / "q.txt").write_text("What is E24?\n\nWhy so?\n")
    assert load_questions(tmp_path / "q.jsonl") == load_questions(tmp_path / "q.txt") == ["What is E24?", "Why so?"]
    (tmp_path / "bad.jsonl").write_text('{"text": "no question"}\n')
    with pytest.raises(HangjiaError, match="'question' field"):
        load_questions(tmp_path / "bad.jsonl")
    (tmp_path / "bad_ex.jsonl").write_text('{"question": "q", "abstained": false, "thumbs": 5, "created_at": "x"}\n')
    with pytest.raises(HangjiaError, match="thumbs 5"):
        load_exchanges(tmp_path / "bad_ex.jsonl")
    # The feedback store's shape: thumbs a boolean, no abstained column (eval's abstention check reads the answer).
    write_jsonl(
        tmp_path / "db.jsonl",
        [
            {
                "question": "q",
                "answer": "The documents do not say.",
                "thumbs": False,
                "created_at": "2026-12-01T10:00Z",
            },
            {"question": "q", "answer": "E24: drain pump blocked.", "thumbs": True, "created_at": 1764583200},
            {"question": "q", "answer": "E24.", "thumbs": None, "created_at": "2026-12-01T10:00:00"},
        ],
    )
    rows = load_exchanges(tmp_path / "db.jsonl")
    assert [(r.abstained, r.thumbs) for r in rows] == [(True, -1), (False, 1), (False, 0)]
    assert {r.created_at.tzinfo for r in rows} == {UTC}


def test_reference_is_the_training_split_without_general_prompts(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.stage("select", {}, {}) as run:
        write_jsonl(
            run.dir / "train.jsonl",
            [
                {"question": "What is E24?", "generator": "extractive"},
                {"question": "What is E24?", "generator": "raft", "prompt": "passages… What is E24?"},
                {"question": "what's  e24", "generator": "paraphrase"},
                {"question": "Write a haiku.", "generator": "general"},
            ],
        )
    assert reference_questions(ws) == ["What is E24?", "what's e24"]


def test_drift_command_exit_codes_chart_and_metrics(kestrel_ws, tmp_path, monkeypatch, capsys):
    reference, recent = split(kestrel_questions())
    ref_file, same_file, shifted_file = tmp_path / "ref.jsonl", tmp_path / "same.txt", tmp_path / "shifted.jsonl"
    write_jsonl(ref_file, [{"question": q} for q in reference])
    same_file.write_text("\n".join(recent) + "\n")
    write_jsonl(shifted_file, [{"question": q} for q in arc_questions(55)])
    ws = str(kestrel_ws.root)
    runner = CliRunner()

    config = tmp_path / "hangjia.yaml"  # drift.reference, relative to the config file, instead of --reference
    config.write_text("drift:\n  reference: ref.jsonl\n")
    result = runner.invoke(app, ["drift", "-w", ws, "-c", str(config), "-q", str(same_file)])
    assert result.exit_code == 0, result.output
    assert "no drift" in result.output

    chart, prom, report = tmp_path / "out" / "drift.png", tmp_path / "out" / "drift.prom", tmp_path / "drift.json"
    args = ["drift", "-w", ws, "-q", str(shifted_file), "--reference", str(ref_file)]
    result = runner.invoke(app, [*args, "--chart", str(chart), "--prom", str(prom), "--json", str(report)])
    assert result.exit_code == DRIFT_EXIT, result.output
    assert "drift detected" in result.output and "DRIFT" in result.output
    assert chart.read_bytes().startswith(b"\x89PNG") and chart.stat().st_size > 20_000
    metrics = {
        line.split()[0]: float(line.split()[-1]) for line in prom.read_text().splitlines() if not line.startswith("#")
    }
    assert metrics["hangjia:drift_detected"] == 1.0 and metrics["hangjia:drift_out_of_domain_share"] > 0.5
    assert metrics["hangjia:drift_embedding_p_value"] < 0.01 and metrics["hangjia:drift_embedding_distance"] > 0
    assert metrics['hangjia:drift_signal_detected{signal="embedding"}'] == 1.0
    data = json.loads(report.read_text())
    assert data["drifted"] and {s["name"] for s in data["signals"]} == {"embedding", "out_of_domain"}

    # A user error is exit 2 with one sentence, through the real entry point.
    monkeypatch.setattr(sys, "argv", ["hangjia", "drift", "-w", ws, "-q", str(tmp_path / "missing.jsonl")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "does not exist" in capsys.readouterr().err
    # Without --reference the training split is the reference, and this workspace has none yet.
    monkeypatch.setattr(sys, "argv", ["hangjia", "drift", "-w", ws, "-q", str(same_file)])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and "hangjia select" in capsys.readouterr().err


def test_percentile_cut_keeps_the_reference_rate(scores):
    """By construction about ood_percentile of the reference falls below the cut."""
    reference = kestrel_questions()
    report = detect_drift(reference, reference[:30], scores, None, DriftConfig(embedding="terms"))
    assert report.signal("out_of_domain").reference == pytest.approx(0.05, abs=0.02)
    assert np.all(report.reference_scores > 0)


def test_the_cronjob_runs_drift_with_options_it_has():
    """deploy/k8s/drift-cronjob.yaml: valid YAML, a CronJob whose script calls `hangjia drift` with real options and
    treats exit 3 as drift."""
    job = yaml.safe_load((REPO / "deploy" / "k8s" / "drift-cronjob.yaml").read_text())
    assert job["kind"] == "CronJob"
    spec = job["spec"]["jobTemplate"]["spec"]
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2, DRIFT_EXIT]
    script = spec["template"]["spec"]["containers"][0]["args"][0].replace("\\\n", " ")
    call = shlex.split(next(line for line in script.splitlines() if line.strip().startswith("hangjia drift")))
    known = {opt for p in typer.main.get_command(app).commands["drift"].params for opt in p.opts}
    assert {a for a in call if a.startswith("-")} <= known and '"$code" -eq 3' in script


def test_drift_reads_the_served_answers_from_the_database(kestrel_ws, tmp_path):
    """`--from-db`: the questions people asked and their thumbs, as `hangjia serve` stored them."""
    from hangjia.app.db.engine import database_url
    from hangjia.app.db.schema import upgrade
    from hangjia.app.exchanges import ExchangeStore

    reference, recent = split(kestrel_questions())
    ref_file = tmp_path / "ref.jsonl"
    write_jsonl(ref_file, [{"question": q} for q in reference])
    ws = str(kestrel_ws.root)
    args = ["drift", "-w", ws, "--from-db", "--reference", str(ref_file)]
    result = CliRunner().invoke(app, args)  # main() turns the error into one sentence and exit 2
    assert isinstance(result.exception, HangjiaError) and "database is empty" in str(result.exception)

    url = database_url(None, kestrel_ws.root)
    upgrade(url)
    store = ExchangeStore(url)
    try:
        for q in [*recent, *arc_questions(55)]:  # half kestrel, half science questions
            ask = [{"role": "system", "content": "Answer."}, {"role": "user", "content": q}]
            exchange = store.record(
                model="domain", version="domain", messages=ask, passages=[], answer="x", latency_ms=5, user="u"
            )
            store.feedback({"exchange_id": exchange, "kind": "thumbs", "thumbs": True}, "u")
    finally:
        store.close()
    result = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "drift.json")])
    assert result.exit_code == DRIFT_EXIT, result.output
    assert f"{len(recent) + 55} served answers from the database" in result.output
    data = json.loads((tmp_path / "drift.json").read_text())
    signals = {s["name"]: s for s in data["signals"]}
    assert signals["out_of_domain"]["drifted"] and data["recent_questions"] == len(recent) + 55
    assert "abstention" in signals and not signals["negative_feedback"]["drifted"]  # every thumb up
