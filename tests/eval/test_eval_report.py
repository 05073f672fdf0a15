"""The evaluation report: files written, charts that decode, escaped answers, optional sections."""

from __future__ import annotations

import base64
import io
import json
import re

from PIL import Image

from hangjia.core.config import GateConfig
from hangjia.eval.gate import check_gate
from hangjia.eval.qa import summarize
from hangjia.eval.report import build_report, write_eval_report

HOSTILE = "<script>alert('x')</script> | & more"


def row(qid, qtype, model, rag, prediction, correct, abstained=False):
    return {
        "id": qid,
        "type": qtype,
        "model": model,
        "rag": rag,
        "question": f"Question {qid} <b>bold</b>?",
        "answer": "drain pump blocked" if qtype != "unanswerable" else "unanswerable",
        "prediction": prediction,
        "correct": correct,
        "abstained": abstained,
        "f1": float(correct),
        "rouge_l": float(correct),
        "sources": [],
    }


def make_answers():
    answers = []
    for model in ("base", "domain"):
        for rag in (False, True):
            good = model == "domain" or rag
            answers += [
                row("q1", "lookup", model, rag, "drain pump blocked" if good else HOSTILE, good),
                row("q2", "numeric", model, rag, "38.50 EUR", True),
                row("q3", "unanswerable", model, rag, "I don't know" if good else "12 kg", good, abstained=good),
            ]
    return answers


def make_results(answers):
    conditions = []
    for model in ("base", "domain"):
        for rag in (False, True):
            rows = [a for a in answers if a["model"] == model and a["rag"] == rag]
            conditions.append(summarize(model, rag, rows))
    results = {
        "conditions": conditions,
        "choices": [
            {"set": "domain mcq", "model": "base", "acc": 0.4, "acc_norm": 0.4, "n": 30},
            {"set": "domain mcq", "model": "domain", "acc": 0.6, "acc_norm": 0.5, "n": 30},
            {"set": "general: anatomy", "model": "base", "shots": 5, "acc": 0.5, "acc_norm": 0.5, "n": 100},
            {"set": "general: anatomy", "model": "domain", "shots": 5, "acc": 0.48, "acc_norm": 0.5, "n": 100},
        ],
        "retrieval": {
            "ks": [1, 3],
            "skipped": 1,
            "overall": {"n": 2, "recall@1": 0.5, "recall@3": 1.0, "mrr": 0.75},
            "by_type": {"lookup": {"n": 2, "recall@1": 0.5, "recall@3": 1.0, "mrr": 0.75}},
            "per_question": [{"id": "q1", "type": "lookup", "rank": 1}, {"id": "q2", "type": "lookup", "rank": 2}],
        },
        "perplexity": {"base": 12.34, "domain": 9.87},
    }
    results["gate"] = check_gate(results, GateConfig(min_domain_gain=5, max_retention_drop=1)).to_dict()
    return results


def test_report_files_charts_and_escaping(tmp_path):
    answers = make_answers()
    results = make_results(answers)
    paths = write_eval_report(tmp_path / "report", results, answers, title="Kestrel <eval>")
    assert {"json", "md", "html", "accuracy_by_condition.png", "accuracy_by_type.png", "multiple_choice.png"} == set(
        paths
    )
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0

    for name in ("accuracy_by_condition.png", "accuracy_by_type.png", "multiple_choice.png"):
        with Image.open(paths[name]) as img:
            img.verify()
            assert img.format == "PNG" and img.size[0] > 100

    page = paths["html"].read_text(encoding="utf-8")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 3
    for data in embedded:
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            img.verify()
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<title>Kestrel &lt;eval&gt;</title>" in page
    assert "Gate: FAILED" in page  # 2-point retention drop against a 1-point allowance

    md = paths["md"].read_text(encoding="utf-8")
    assert "<script>" not in md and "\\| &amp; more" in md  # a pipe would break the table row
    assert "| domain + RAG | 100.0 |" in md
    assert "| base | 33.3 | 100.0 |" in md  # model × RAG accuracy matrix
    assert "recall@3" in md and "12.34" in md and "| general: anatomy | domain | 5 | 100 | 48.0 | 50.0 | -2.0 |" in md
    assert "| domain mcq | base | 0 | 30 |" in md  # results written before shots were recorded: 0-shot

    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert [c["condition"] for c in report["conditions"]] == ["base", "base + RAG", "domain", "domain + RAG"]
    assert report["conditions"][0]["refusal_accuracy"] == 0.0 and report["conditions"][1]["refusal_accuracy"] == 1.0
    assert "per_question" not in report["retrieval"] and report["gate"]["passed"] is False
    # Only base without RAG got q1 and q3 wrong: those disagreements come first among the samples.
    assert [s["id"] for s in report["samples"]] == ["q1", "q2", "q3"]
    q1 = report["samples"][0]["answers"]
    assert q1["base"] == {"prediction": HOSTILE, "correct": False} and q1["domain + RAG"]["correct"]


def test_minimal_results_without_optional_sections(tmp_path):
    answers = [row("q1", "lookup", "base", False, "drain pump", False)]
    results = {"conditions": [summarize("base", False, answers)]}
    paths = write_eval_report(tmp_path, results, [], title="Base only")
    assert set(paths) == {"json", "md", "html", "accuracy_by_condition.png", "accuracy_by_type.png"}
    md = paths["md"].read_text(encoding="utf-8")
    assert "Retrieval" not in md and "Gate" not in md and "Sample answers" not in md
    assert "| base | 0.0 |" in md


def test_samples_prefer_questions_where_the_conditions_disagree():
    answers = make_answers()
    report = build_report(make_results(answers), answers, title="t", samples=2)
    assert [s["id"] for s in report["samples"]] == ["q1", "q3"]  # q2 is right everywhere
