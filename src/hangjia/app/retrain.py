"""`hangjia retrain`: the feedback reviewers accepted becomes a candidate model, which replaces the version in service
only when it is at least as good.

    review queue (accepted) ──export──► feedback_sft, feedback_dpo (dataset versions, rows name their feedback)
        │
        ▼
    data stages (ingest … select; skipped when the documents did not change)
        │
        ▼
    SFT  ─ documents unchanged: the production adapter trained further on the feedback × retrain.feedback_repeats
        │   plus retrain.replay examples of the previous training data (incremental: minutes, not a full run)
        │ ─ documents changed: a fresh adapter on all the training data plus the feedback (as `hangjia build`)
        ▼
    DPO on the feedback's preference pairs (picked drafts, corrections over what they replaced), when there are any
        │
        ▼
    eval: the two models retrain.gate compares, the candidate (domain) and production, on eval.questions ──► gate
        │
        ▼
    registry: the candidate becomes domain@N+1 (alias candidate), with lineage down to the feedback versions;
              production moves to it only when the gate passed (`hangjia registry rollback` moves it back)

A report (WS/retrain/<time>.md and .json) says what was learned from, what changed against production and why it was
or was not promoted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.app.db.engine import display_url
from hangjia.app.lineage import provenance
from hangjia.app.registry import CANDIDATE, PRODUCTION, Registry
from hangjia.app.review import export
from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import read_jsonl
from hangjia.core.workspace import Workspace

# What `hangjia retrain` did, in one word (RetrainResult.outcome).
PROMOTED, KEPT, NOTHING_NEW = "promoted", "kept", "nothing new"


@dataclass
class RetrainResult:
    outcome: str
    """promoted (the candidate is production now), kept (the gate failed or --no-promote: production stays) or
    nothing new (no accepted feedback beyond what production learned, and the documents unchanged)."""
    why: str
    feedback: dict[str, Any]
    """feedback_sft / feedback_dpo: {"ref", "rows"} of the versions exported now (None: nothing accepted)."""
    production: int
    """The production version before the retrain."""
    candidate: int | None = None
    mode: str = ""
    """incremental (production's adapter trained further) or full (a fresh adapter on everything)."""
    training: dict[str, Any] = field(default_factory=dict)
    comparison: list[dict[str, Any]] = field(default_factory=list)
    """Per measurement: the candidate's and production's value and the difference."""
    gate: dict[str, Any] | None = None
    report: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "report": str(self.report) if self.report else None}


def retrain(
    ws: Workspace,
    cfg: ProjectConfig,
    console: Console,
    url: str,
    *,
    by: str | None = None,
    promote: bool = True,
    force: bool = False,
) -> RetrainResult:
    """Export the accepted feedback, train a candidate on it, evaluate it against production with retrain.gate,
    register it, and promote it when the gate passed (and `promote`)."""
    from hangjia.app.db.engine import make_engine, make_sessions
    from hangjia.stages.eval import evaluate, gate
    from hangjia.stages.index import index
    from hangjia.stages.ingest import ingest
    from hangjia.stages.preference import dpo
    from hangjia.stages.select import select
    from hangjia.stages.synth import synth
    from hangjia.stages.train import train

    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            written = export(session, ws.root / "datasets", display_url(url))
    finally:
        engine.dispose()
    sft_ref, dpo_ref = ((written.get(name) or {}).get("ref") for name in ("feedback_sft", "feedback_dpo"))
    with Registry(url, ws.root) as registry:
        production = registry.aliases().get(PRODUCTION)
        if production is None:
            raise HangjiaError(
                "No production version to improve on yet: `hangjia build` makes the first one, or "
                "`hangjia registry promote N` names one."
            )
        serving = registry.version(production.version)
        serving_dir = registry.weights(serving)
    result = RetrainResult("", "", written, serving.version)
    for stage in (ingest, index, synth, select):
        stage(ws, cfg, console)
    learned = serving.lineage.get("datasets", {})
    same_data = (
        serving.lineage.get("stages", {}).get("select", {}).get("fingerprint") == ws.manifest("select")["fingerprint"]
    )
    new_feedback = (sft_ref or dpo_ref) and (
        sft_ref != learned.get("feedback_sft") or dpo_ref != learned.get("feedback_dpo")
    )
    if same_data and not new_feedback and not force:
        result.outcome = NOTHING_NEW
        result.why = (
            "no accepted feedback yet (`hangjia review ls` lists what waits for a reviewer)"
            if not (sft_ref or dpo_ref)
            else f"production ({serving.ref}) already learned every accepted judgement, and the documents are unchanged"
        )
        return result
    incremental = same_data and serving.kind == "lora" and cfg.train.method == "lora"
    result.mode = "incremental" if incremental else "full"
    console.print(
        f"retrain: {_rows(written)} accepted judgements; "
        + (
            f"{serving.ref}'s adapter learns them beside {cfg.retrain.replay} replayed examples"
            if incremental
            else "the documents changed since production, so a fresh adapter learns everything"
        )
    )
    train(ws, cfg, console, force, feedback=sft_ref, start_from=serving_dir if incremental else None)
    result.training = dict(ws.manifest("train")["counts"])
    if dpo_ref and cfg.retrain.dpo:
        dpo(ws, cfg, console, force, feedback=dpo_ref)
        result.training["dpo"] = dict(ws.manifest("dpo")["counts"])
    judged = cfg.model_copy(deep=True)
    judged.eval.production = serving_dir
    judged.gate = cfg.retrain.gate
    judged.eval.models = sorted({judged.gate.candidate, judged.gate.reference})  # the two the gate compares
    if judged.eval.questions is None:
        raise HangjiaError("retrain compares the candidate with production on eval.questions; set it in hangjia.yaml.")
    evaluate(ws, judged, console, force)
    verdict = gate(ws, judged)
    result.gate = verdict.to_dict()
    result.comparison = comparison(json.loads((ws.stage_dir("eval") / "results.json").read_text(encoding="utf-8")))
    result.comparison += taught_comparison(
        read_jsonl(ws.stage_dir("eval") / "answers.jsonl"), taught_texts(ws, sft_ref, dpo_ref)
    )
    with Registry(url, ws.root) as registry:
        done = registry.register(provenance(ws, cfg.train.base_model), alias=CANDIDATE, by=by)
        result.candidate = done.version.version
        if not verdict.passed:
            result.outcome, result.why = KEPT, f"the gate failed, so production stays at {serving.ref}"
        elif not promote:
            result.outcome, result.why = KEPT, f"the gate passed; --no-promote keeps production at {serving.ref}"
        else:
            note = f"hangjia retrain: gate passed against {serving.ref}"
            registry.promote(done.version.version, alias=PRODUCTION, by=by, note=note)
            result.outcome, result.why = PROMOTED, f"the gate passed against {serving.ref}"
    result.report = write_report(ws, result)
    return result


def _rows(written: dict[str, Any]) -> str:
    parts = [f"{info['rows']} {name}" for name, info in written.items() if info]
    return ", ".join(parts) or "no"


def comparison(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate (domain) beside production on each measurement both have: QA accuracy per RAG setting and
    multiple-choice accuracy per set, in percent."""
    rows = []
    by_model = {(c["model"], bool(c["rag"])): c for c in results.get("conditions", [])}
    for rag in (False, True):
        cand, prod = by_model.get(("domain", rag)), by_model.get((PRODUCTION, rag))
        if cand and prod:
            rows.append(_row(f"domain QA accuracy, RAG {'on' if rag else 'off'}", cand["accuracy"], prod["accuracy"]))
    choices = {(r["model"], r["set"]): r for r in results.get("choices", [])}
    for (model, name), row in sorted(choices.items()):
        if model == "domain" and (PRODUCTION, name) in choices:
            rows.append(_row(f"{name} (multiple choice)", row["acc"], choices[(PRODUCTION, name)]["acc"]))
    return rows


def taught_texts(ws: Workspace, sft_ref: str | None, dpo_ref: str | None) -> list[str]:
    """The prompts of the feedback versions (their questions, with the passages shown beside them)."""
    from hangjia.stages.preference import feedback_preferences
    from hangjia.stages.train import feedback_examples

    texts = [prompt for prompt, _ in feedback_examples(ws, sft_ref)[1]]
    return texts + ([question for question, _, _ in feedback_preferences(ws, dpo_ref)] if dpo_ref else [])


def taught_comparison(answers: list[dict[str, Any]], taught: list[str]) -> list[dict[str, Any]]:
    """The QA rows again, split into the evaluation questions the feedback itself answered and the others.

    A correction for an evaluation question teaches its answer, so a gain there is partly memorisation; the others
    show what the feedback taught beyond the questions it answered. Nothing when no evaluation question was taught."""
    hit = {a["id"] for a in answers if any(a["question"] in text for text in taught)}
    if not hit:
        return []
    rows = []
    for rag in (False, True):
        cells: dict[tuple[str, bool], list[bool]] = {}
        for a in answers:
            if a["rag"] == rag and a["model"] in ("domain", PRODUCTION):
                cells.setdefault((a["model"], a["id"] in hit), []).append(bool(a["correct"]))
        for was_taught, label in ((True, "the feedback answered"), (False, "no feedback answered")):
            cand, prod = cells.get(("domain", was_taught)), cells.get((PRODUCTION, was_taught))
            if cand and prod:
                n = len(cand)
                what = f"domain QA accuracy, RAG {'on' if rag else 'off'}: the {n} question{'s' * (n != 1)} {label}"
                rows.append({**_row(what, sum(cand) / len(cand), sum(prod) / len(prod)), "taught": was_taught})
    return rows


def _row(what: str, candidate: float, production: float) -> dict[str, Any]:
    c, p = round(candidate * 100, 1), round(production * 100, 1)
    return {"measure": what, "candidate": c, "production": p, "change": round(c - p, 1)}


def write_report(ws: Workspace, result: RetrainResult) -> Path:
    """WS/retrain/<UTC time>.md (and .json beside it): what was learned, what changed, the verdict."""
    folder = ws.root / "retrain"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result.report = stem.with_suffix(".md")
    lines = [
        f"# hangjia retrain: {result.outcome}",
        "",
        f"**Why**: {result.why}.",
        "",
        "## Learned from",
        "",
    ]
    for name, info in result.feedback.items():
        lines.append(f"- {name}: " + (f"{info['rows']} rows ({info['ref']})" if info else "nothing accepted"))
    train = result.training
    lines += [
        f"- mode: {result.mode} (from domain@{result.production})"
        if result.mode == "incremental"
        else f"- mode: {result.mode}",
        f"- SFT: {train.get('train_examples', '?')} examples ({train.get('feedback_examples', 0)} distinct from "
        f"feedback), {train.get('steps', '?')} steps, validation loss {_num(train.get('val_loss_before'))} → "
        f"{_num(train.get('val_loss_after'))}",
    ]
    if "dpo" in train:
        d = train["dpo"]
        lines.append(f"- DPO: {d.get('pairs', '?')} preference pairs, {d.get('steps', '?')} steps")
    lines += ["", f"## Candidate domain@{result.candidate} against production domain@{result.production}", ""]
    lines += ["| measure | candidate | production | change |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['measure']} | {r['candidate']} | {r['production']} | {r['change']:+.1f} |" for r in result.comparison
    ]
    if any("taught" in r for r in result.comparison):
        lines += [
            "",
            "Questions the feedback answered were learned from their corrections: a gain there is partly "
            "memorisation, and the questions no feedback answered show what carried over.",
        ]
    if result.gate:
        lines += ["", f"## Gate: {'passed' if result.gate['passed'] else 'failed'}", ""]
        lines += [f"- {'✓' if c['passed'] else '✗'} {c['message']}" for c in result.gate["checks"]]
    result.report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    stem.with_suffix(".json").write_text(
        json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    return result.report


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "?"
