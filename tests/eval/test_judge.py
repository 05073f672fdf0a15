"""LLM-as-judge against a scripted OpenAI-compatible endpoint, and eval's held-out perplexity, on a tiny model."""

import json

import torch
from rich.console import Console

from hangjia.core.config import JudgeConfig, ProjectConfig
from hangjia.core.workspace import Workspace
from hangjia.eval.judge import NO_ANSWER_REFERENCE, judge_answers, parse_verdict, summarize_verdicts
from hangjia.llm.teacher import make_teacher
from hangjia.stages.eval import evaluate
from hangjia.stages.ingest import ingest
from hangjia.stages.select import select
from hangjia.stages.synth import synth
from hangjia.stages.train import train
from tests.fake_teacher import fake_endpoint
from tests.paths import KESTREL


def _grade(messages):
    """Says yes when every word of the reference occurs in the candidate; 'maybe' for candidates about cats."""
    user = messages[-1]["content"]
    reference = user.split("Reference answer: ")[1].split("\n")[0].lower()
    candidate = user.split("Candidate answer: ")[1].split("\n")[0].lower()
    if "cat" in candidate:
        return "Maybe."
    return "Yes." if all(w in candidate for w in reference.split()) else "No, it differs."


def test_parse_verdict():
    assert parse_verdict("Yes.") is True and parse_verdict("no") is False
    assert parse_verdict("Answer: YES, same fact") is True
    assert parse_verdict("eyes only") is None and parse_verdict("") is None and parse_verdict(None) is None


def test_judge_answers_through_the_endpoint_and_summary(tmp_path):
    rows = [
        {"model": "base", "rag": False, "question": "Q1", "answer": "drain pump", "prediction": "the drain pump"},
        {"model": "base", "rag": False, "question": "Q2", "answer": "3 bar", "prediction": "5 bar"},
        {"model": "base", "rag": False, "question": "Q3", "answer": "x", "prediction": "a cat"},
        {"model": "domain", "rag": False, "question": "Q4", "answer": "n/a", "prediction": "", "type": "unanswerable"},
    ]
    for row, correct in zip(rows, [False, False, False, True], strict=True):
        row["correct"] = correct
    with fake_endpoint(_grade) as endpoint:
        judge = make_teacher("endpoint", model="judge", base_url=endpoint.url, cache_path=tmp_path / "c.sqlite")
        verdicts = judge_answers(judge, rows)
        assert verdicts == [True, False, None, False]
        unanswerable = next(c for c in endpoint.contents() if c.startswith("Question: Q4"))  # sent concurrently
        assert NO_ANSWER_REFERENCE in unanswerable and "(no answer)" in unanswerable
        assert all(r["temperature"] == 0 and r["max_tokens"] == 8 for r in endpoint.requests)
        judge_answers(judge, rows)  # cached: nothing sent again
        assert len(endpoint.requests) == 4
    for row, verdict in zip(rows, verdicts, strict=True):
        row["judge"] = verdict
    summary = summarize_verdicts(rows)
    assert summary[("base", False)] == {"judge_accuracy": 0.5, "judged": 2, "judge_agreement": 0.5}
    assert summary[("domain", False)] == {"judge_accuracy": 0.0, "judged": 1, "judge_agreement": 0.0}


def test_eval_adds_judge_verdicts_and_held_out_perplexity(tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("dishwasher_error_codes.md", "spare_parts_prices.csv", "warranty_policy.md"):
        (docs / name).write_bytes((KESTREL / "docs" / name).read_bytes())
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(tiny_model_dir)
    cfg.train.max_steps, cfg.train.warmup_ratio = 2, 0.0  # with warmup a 1-step run has learning rate 0
    cfg.select.quality, cfg.select.general_ratio, cfg.select.raft = "none", 0.0, False
    cfg.select.splits = (0.6, 0.2, 0.2)
    cfg.eval.questions, cfg.eval.limit, cfg.eval.max_new_tokens = KESTREL / "questions.jsonl", 3, 4
    ws, quiet = Workspace(tmp_path / "ws"), Console(quiet=True)
    for stage in (ingest, synth, select, train):
        stage(ws, cfg, quiet)
    with fake_endpoint(lambda messages: "no") as endpoint:
        cfg.eval.judge = JudgeConfig(base_url=endpoint.url, model="judge")
        evaluate(ws, cfg, quiet)
        sent = len(endpoint.requests)
    results = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    for condition in results["conditions"]:
        assert condition["judged"] == 3 and condition["judge_accuracy"] == 0.0
    answers = [json.loads(line) for line in (ws.stage_dir("eval") / "answers.jsonl").read_text().splitlines()]
    assert [a["judge"] for a in answers] == [False] * 6  # 3 questions × (base, domain); no index: RAG off only
    assert sent == len({(a["question"], a["prediction"]) for a in answers})  # the same answer is judged once
    ppl = results["perplexity"]
    assert set(ppl) == {"base", "domain"} and all(v > 1 for v in ppl.values()) and ppl["base"] != ppl["domain"]
    report = (ws.stage_dir("eval") / "report.md").read_text()
    assert "Perplexity on held-out text" in report and "judge acc." in report
