"""The release gate on results in the shape stages/eval.py writes: pass, fail, unmeasured metrics, usage errors."""

from __future__ import annotations

import json

import pytest

from hangjia.core.config import GateConfig
from hangjia.core.errors import HangjiaError
from hangjia.eval.gate import active_rules, check_gate


def condition(model, rag, accuracy, refusal):
    return {"model": model, "rag": rag, "accuracy": accuracy, "by_type": {}, "refusal_accuracy": refusal}


RESULTS = {
    "conditions": [
        condition("base", False, 0.50, 0.25),
        condition("base", True, 0.60, 0.50),
        condition("domain", False, 0.58, 0.50),
        condition("domain", True, 0.70, 0.75),
    ],
    "choices": [
        {"set": "domain mcq", "model": "base", "acc": 0.40, "acc_norm": 0.4, "n": 30},
        {"set": "domain mcq", "model": "domain", "acc": 0.60, "acc_norm": 0.6, "n": 30},
        {"set": "general: anatomy", "model": "base", "acc": 0.50, "acc_norm": 0.5, "n": 100},
        {"set": "general: anatomy", "model": "domain", "acc": 0.47, "acc_norm": 0.5, "n": 100},
        {"set": "general: astronomy", "model": "base", "acc": 0.40, "acc_norm": 0.4, "n": 50},
        {"set": "general: astronomy", "model": "domain", "acc": 0.40, "acc_norm": 0.4, "n": 50},
    ],
}
PASSING = GateConfig(
    min_domain_gain=5,
    min_domain_gain_rag=10,  # the gain with RAG is exactly 10 points: (0.70 - 0.60) * 100 is 9.999999999999998
    min_refusal_accuracy=50,
    min_mcq_gain=10,
    max_retention_drop=3,
)


def by_name(verdict):
    return {c.name: c for c in verdict.checks}


def test_all_rules_met_passes_with_exit_code_0():
    verdict = check_gate(RESULTS, PASSING)
    checks = by_name(verdict)
    assert verdict.passed and verdict.exit_code == 0
    assert list(checks) == [
        "domain gain (RAG off)",
        "domain gain (RAG on)",
        "refusal_accuracy (RAG off)",
        "refusal_accuracy (RAG on)",
        "mcq gain",
        "retention drop",
    ]
    assert checks["domain gain (RAG off)"].value == pytest.approx(8.0)
    assert checks["domain gain (RAG on)"].value == pytest.approx(10.0)
    # Pooled by items: base (50·100 + 40·50) / 150 = 46.67, domain (47·100 + 40·50) / 150 = 44.67.
    assert checks["retention drop"].value == pytest.approx(2.0)
    assert checks["mcq gain"].value == pytest.approx(20.0)


def test_a_candidate_worse_than_the_rules_fails_with_exit_code_1():
    rules = GateConfig(min_domain_gain=10, max_retention_drop=1, min_accuracy=60)
    verdict = check_gate(RESULTS, rules)
    checks = by_name(verdict)
    assert not verdict.passed and verdict.exit_code == 1
    assert not checks["domain gain (RAG off)"].passed and "needs ≥ +10.0" in checks["domain gain (RAG off)"].message
    assert not checks["retention drop"].passed
    assert not checks["accuracy (RAG off)"].passed and checks["accuracy (RAG on)"].passed  # 58% and 70%
    assert checks["accuracy (RAG off)"].message.endswith(": 58.0 (needs ≥ 60.0)")  # a level, not a signed gain


def test_reversed_roles_turn_gains_into_losses():
    verdict = check_gate(RESULTS, GateConfig(min_domain_gain=0, candidate="base", reference="domain"))
    assert not verdict.passed and verdict.checks[0].value == pytest.approx(-8.0)
    # A negative threshold allows a bounded loss.
    assert check_gate(RESULTS, GateConfig(min_domain_gain=-10, candidate="base", reference="domain")).passed


def test_an_unmeasured_metric_fails_the_gate():
    no_rag_no_choices = {
        "conditions": [
            condition("base", False, 0.5, None),
            condition("domain", False, 0.9, None),  # no unanswerable questions: refusal accuracy None
        ]
    }
    verdict = check_gate(
        no_rag_no_choices,
        GateConfig(min_domain_gain=5, min_domain_gain_rag=0, min_refusal_accuracy=50, max_retention_drop=5),
    )
    checks = by_name(verdict)
    assert checks["domain gain (RAG off)"].passed
    for name in ("domain gain (RAG on)", "refusal_accuracy (RAG off)", "retention drop"):
        assert checks[name].value is None and not checks[name].passed, name
        assert "not measured" in checks[name].message
    assert not verdict.passed and verdict.exit_code == 1


def test_usage_errors_raise():
    with pytest.raises(HangjiaError, match="No gate rules"):
        check_gate(RESULTS, GateConfig())
    with pytest.raises(HangjiaError, match="'tuned' is not in the evaluation results"):
        check_gate(RESULTS, PASSING.model_copy(update={"candidate": "tuned"}))
    with pytest.raises(HangjiaError, match="both"):
        check_gate(RESULTS, PASSING.model_copy(update={"candidate": "base"}))


def test_the_rules_are_the_gate_settings_that_are_set():
    assert active_rules(GateConfig()) == {}
    assert active_rules(PASSING) == {
        "min_domain_gain": 5,
        "min_domain_gain_rag": 10,
        "min_refusal_accuracy": 50,
        "min_mcq_gain": 10,
        "max_retention_drop": 3,
    }
    # Every setting but the two model names is a rule.
    names = set(GateConfig.model_fields) - {"candidate", "reference"}
    assert set(active_rules(GateConfig(**dict.fromkeys(names, 0)))) == names


def test_verdict_serialises_to_json():
    data = json.loads(json.dumps(check_gate(RESULTS, PASSING).to_dict()))
    assert data["passed"] is True and data["candidate"] == "domain"
    assert set(data["checks"][0]) == {"name", "value", "threshold", "passed", "message"}
