"""Release gate: does the tuned model beat the base model by enough, without forgetting too much?

`check_gate` reads the results that `stages.eval.evaluate` writes (eval/results.json) and compares a candidate model
with a reference model under the rules of the `gate:` section (`GateConfig`). Every threshold is in percentage points
(0-100) and optional; a rule left at None is not checked. A rule whose metric the results lack (no RAG-on
conditions, no general-knowledge sets, no unanswerable questions) fails: a gate that silently skips a check would
pass a model nobody measured.

Exit codes for `hangjia eval --gate` (and any CI step built on this module):
    0  every check passed;
    1  the gate failed: at least one check failed (the candidate is worse than the rules allow, or unmeasured);
    2  usage error: no rules set, a model named that the results do not hold, unreadable results (a HangjiaError,
       which the CLI already turns into exit code 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from hangjia.core.config import GateConfig
from hangjia.core.errors import HangjiaError

GENERAL_PREFIX = "general"  # stages.eval._multiple_choice names general-knowledge sets "general: <subject>"
DOMAIN_MCQ = "domain mcq"
_EPS = 1e-6  # accuracies are stored rounded to 4 decimals; a gain of exactly the threshold must pass
MODELS = {"candidate", "reference"}  # the GateConfig fields that name the two models; every other one is a rule


def active_rules(gate: GateConfig) -> dict[str, float]:
    """The rules of `gate` that are set (not None), by field name."""
    return {k: v for k, v in gate.model_dump(exclude=MODELS).items() if v is not None}


class GateCheck(NamedTuple):
    name: str
    value: float | None
    """The measured number in points or percent; None when the results lack it."""
    threshold: float
    passed: bool
    message: str


@dataclass
class GateVerdict:
    passed: bool
    checks: list[GateCheck]
    candidate: str = "domain"
    reference: str = "base"

    @property
    def exit_code(self) -> int:
        """0 when the gate passed, 1 when it failed (2, a usage error, is raised as HangjiaError instead)."""
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "checks": [c._asdict() for c in self.checks]}


def _conditions(results: dict[str, Any], model: str) -> dict[bool, dict[str, Any]]:
    return {bool(c["rag"]): c for c in results.get("conditions", []) if c["model"] == model}


def _pooled_acc(results: dict[str, Any], model: str, sets: set[str]) -> float | None:
    rows = [r for r in results.get("choices", []) if r["model"] == model and r["set"] in sets]
    n = sum(r["n"] for r in rows)
    return sum(r["acc"] * r["n"] for r in rows) / n if n else None


def _rag_label(rag: bool) -> str:
    return "RAG on" if rag else "RAG off"


def _at_least(
    name: str, value: float | None, threshold: float, what: str, missing: str, signed: bool = True
) -> GateCheck:
    """A check that `value` (a gain when `signed`, else a level) reaches `threshold`; failed when unmeasured."""
    if value is None:
        return GateCheck(name, None, threshold, False, f"{what}: not measured; {missing}")
    value = round(value, 2)
    ok = value >= threshold - _EPS
    fmt = "+.1f" if signed else ".1f"
    return GateCheck(name, value, threshold, ok, f"{what}: {value:{fmt}} (needs ≥ {threshold:{fmt}})")


def check_gate(results: dict[str, Any], gate: GateConfig) -> GateVerdict:
    """Each rule set in `gate` as a check of `gate.candidate` against `gate.reference` on `results`
    (eval/results.json); passed when every check passed."""
    candidate, reference = gate.candidate, gate.reference
    active = active_rules(gate)
    if not active:
        raise HangjiaError("No gate rules are set; add thresholds under `gate:` in hangjia.yaml, or drop --gate.")
    if candidate == reference:
        raise HangjiaError(f"The gate compares two models, but candidate and reference are both '{candidate}'.")
    present = {c["model"] for c in results.get("conditions", [])} | {r["model"] for r in results.get("choices", [])}
    for role, model in (("candidate", candidate), ("reference", reference)):
        if model not in present:
            raise HangjiaError(
                f"The {role} model '{model}' is not in the evaluation results (they hold: "
                f"{', '.join(sorted(present)) or 'no models'}); train it and run `hangjia eval`, or name another."
            )
    cand, ref = _conditions(results, candidate), _conditions(results, reference)
    checks: list[GateCheck] = []

    for rule, rag in (("min_domain_gain", False), ("min_domain_gain_rag", True)):
        if rule not in active:
            continue
        gain = None
        if rag in cand and rag in ref:
            gain = (cand[rag]["accuracy"] - ref[rag]["accuracy"]) * 100
        hint = "evaluate with an index (`hangjia ingest`)" if rag else "evaluate with RAG off"
        checks.append(
            _at_least(
                f"domain gain ({_rag_label(rag)})",
                gain,
                active[rule],
                f"{candidate} vs {reference} domain QA accuracy, {_rag_label(rag)}, points",
                f"{hint} or drop {rule}.",
            )
        )

    for rule, key, what in (
        ("min_accuracy", "accuracy", "domain QA accuracy"),
        ("min_refusal_accuracy", "refusal_accuracy", "refusal accuracy on unanswerable questions"),
    ):
        if rule not in active:
            continue
        for rag in sorted(cand) or [False]:
            value = cand.get(rag, {}).get(key)
            checks.append(
                _at_least(
                    f"{key} ({_rag_label(rag)})",
                    None if value is None else value * 100,
                    active[rule],
                    f"{candidate} {what}, {_rag_label(rag)}, %",
                    f"add questions of that kind (type 'unanswerable' for refusals) or drop {rule}.",
                    signed=False,
                )
            )

    if "min_mcq_gain" in active:
        c, r = _pooled_acc(results, candidate, {DOMAIN_MCQ}), _pooled_acc(results, reference, {DOMAIN_MCQ})
        checks.append(
            _at_least(
                "mcq gain",
                None if c is None or r is None else (c - r) * 100,
                active["min_mcq_gain"],
                f"{candidate} vs {reference} domain multiple-choice acc, points",
                "set eval.mcq or drop min_mcq_gain.",
            )
        )

    if "max_retention_drop" in active:
        limit = active["max_retention_drop"]
        sets_of = {
            model: {r["set"] for r in results.get("choices", []) if r["model"] == model}
            for model in (candidate, reference)
        }
        general = {s for s in sets_of[candidate] & sets_of[reference] if s.startswith(GENERAL_PREFIX)}
        c, r = _pooled_acc(results, candidate, general), _pooled_acc(results, reference, general)
        what = f"{candidate} vs {reference} general-knowledge acc lost ({len(general)} sets), points"
        if c is None or r is None:
            checks.append(GateCheck("retention drop", None, limit, False, f"{what}: not measured; set eval.general."))
        else:
            drop = round((r - c) * 100, 2)
            ok = drop <= limit + _EPS
            checks.append(GateCheck("retention drop", drop, limit, ok, f"{what}: {drop:.1f} (allows ≤ {limit:.1f})"))

    return GateVerdict(all(c.passed for c in checks), checks, candidate, reference)
