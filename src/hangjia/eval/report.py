"""The evaluation report: report.json (the numbers), report.md (tables) and report.html (tables, charts, answers).

It reads what `stages.eval` writes: results.json (conditions, choices, and where present retrieval, gate and
perplexity) and the answer rows of answers.jsonl. Charts are matplotlib Figures drawn with Agg (no pyplot, no
display), saved as PNG files next to the report and embedded in the HTML as data URIs, so report.html is one file
that can be mailed or attached to a CI run. `core.reports` writes the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hangjia.core import reports
from hangjia.core.reports import Cell, Chart, Document, Paragraph, Section, Table

BASE = "base"  # engine.BASE, not imported: the engine module pulls in the model stack
METRICS = (  # (key in a condition summary, column title)
    ("accuracy", "accuracy"),
    ("f1", "token F1"),
    ("rouge_l", "ROUGE-L"),
    ("answerable_accuracy", "answerable acc."),
    ("refusal_accuracy", "refusal acc."),
    ("judge_accuracy", "judge acc."),  # only with eval.judge; "—" otherwise
)
_GUARDED = ("accuracy", "answerable_accuracy", "refusal_accuracy", "false_abstentions")


def condition_label(model: str, rag: bool) -> str:
    return f"{model} + RAG" if rag else model


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _delta(row: dict[str, Any], base: dict[str, float]) -> str:
    if row["model"] == BASE or row["set"] not in base:
        return "—"
    return f"{(row['acc'] - base[row['set']]) * 100:+.1f}"


def _pick_samples(answers: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Up to n questions with every condition's answer, preferring those where the conditions disagree on
    correctness (where tuning or retrieval made a difference), in question order."""
    by_id: dict[str, dict[str, Any]] = {}
    for row in answers:
        q = by_id.setdefault(
            row["id"],
            {"id": row["id"], "type": row.get("type", ""), "question": row["question"], "answer": row["answer"]},
        )
        q.setdefault("answers", {})[condition_label(row["model"], row["rag"])] = {
            "prediction": row["prediction"],
            "correct": bool(row.get("correct")),
        }
    order = list(by_id)
    disagree = [i for i in order if len({a["correct"] for a in by_id[i]["answers"].values()}) > 1]
    chosen = set((disagree + [i for i in order if i not in disagree])[:n])
    return [by_id[i] for i in order if i in chosen]


def build_report(
    results: dict[str, Any], answers: Sequence[dict[str, Any]], *, title: str, samples: int = 12
) -> dict[str, Any]:
    """The report's content as plain data (what report.json holds)."""
    conditions = results.get("conditions", [])
    types = sorted({t for c in conditions for t in c.get("by_type", {})})
    report: dict[str, Any] = {
        "title": title,
        "questions": conditions[0]["total"] if conditions else 0,
        "conditions": [
            {
                "condition": condition_label(c["model"], c["rag"]),
                "model": c["model"],
                "rag": c["rag"],
                **{key: c.get(key) for key, _ in METRICS},
                "false_abstentions": c.get("false_abstentions"),
            }
            for c in conditions
        ],
        # What the answer guard changed, per RAG condition it ran on: the figures without and with it.
        "guard": [
            {
                "condition": condition_label(c["model"], c["rag"]),
                "without": {k: c["unguarded"].get(k) for k in _GUARDED},
                "with": {k: c.get(k) for k in _GUARDED},
                "blocked": c.get("guard_blocked", {}),
            }
            for c in conditions
            if c.get("unguarded")
        ],
        "types": types,
        "by_type": [
            {
                "condition": condition_label(c["model"], c["rag"]),
                "accuracy": {t: c.get("by_type", {}).get(t) for t in types},
                "f1": {t: c.get("by_type_f1", {}).get(t) for t in types},
            }
            for c in conditions
        ],
        "choices": results.get("choices", []),
        "samples": _pick_samples(answers, samples),
    }
    if results.get("retrieval"):
        report["retrieval"] = {k: v for k, v in results["retrieval"].items() if k != "per_question"}
    for key in ("gate", "perplexity"):
        if results.get(key):
            report[key] = results[key]
    return report


# ---- charts -------------------------------------------------------------------------------------------------------


def _grouped_bars(groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> bytes:
    """One cluster of bars per group, one bar per series; None draws no bar."""
    fig = reports.figure(max(5.0, 1.1 * len(groups) * max(len(series), 1) ** 0.5 + 2), 3.4)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    for s, (name, values) in enumerate(series.items()):
        xs = [g + (s - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [0.0 if v is None else v * 100 for v in values]
        bars = ax.bar(xs, heights, width, label=name)
        ax.bar_label(bars, labels=["" if v is None else f"{v * 100:.0f}" for v in values], fontsize=7)
    rotate = len(groups) > 4
    ax.set_xticks(range(len(groups)), groups, rotation=20 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(len(series), 4), loc="upper left", bbox_to_anchor=(0, -0.15))
    ax.grid(axis="y", alpha=0.3)
    return reports.png(fig, dpi=110, tight=True)


def charts(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes per chart file name; charts without data are left out."""
    out: dict[str, bytes] = {}
    conds = report["conditions"]
    if conds:
        out["accuracy_by_condition.png"] = _grouped_bars(
            [c["condition"] for c in conds],
            {title: [c.get(key) for c in conds] for key, title in METRICS[:3]},
            "Domain QA by condition",
            "%",
        )
    if report["types"] and report["by_type"]:
        out["accuracy_by_type.png"] = _grouped_bars(
            report["types"],
            {row["condition"]: [row["accuracy"][t] for t in report["types"]] for row in report["by_type"]},
            "Accuracy by question type",
            "accuracy, %",
        )
    if report["choices"]:
        sets = list(dict.fromkeys(r["set"] for r in report["choices"]))
        models = list(dict.fromkeys(r["model"] for r in report["choices"]))
        acc = {(r["set"], r["model"]): r["acc"] for r in report["choices"]}
        out["multiple_choice.png"] = _grouped_bars(
            sets, {m: [acc.get((s, m)) for s in sets] for m in models}, "Multiple choice (chance 25%)", "acc, %"
        )
    return out


# ---- the document --------------------------------------------------------------------------


def _tables(report: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[Any]]]]:
    """(section title, note, header, rows) in report order; cells are plain text (a gate check's result, a `Cell`
    with its verdict), escaped by the renderer."""
    tables = []
    conds = report["conditions"]
    if conds:
        models = list(dict.fromkeys(c["model"] for c in conds))
        rags = sorted({c["rag"] for c in conds})
        acc = {(c["model"], c["rag"]): c["accuracy"] for c in conds}
        tables.append(
            (
                "Accuracy: model × RAG",
                f"{report['questions']} questions; exact or alias match, abstention on unanswerable ones.",
                ["model", *("RAG on" if r else "RAG off" for r in rags)],
                [[m, *(_pct(acc.get((m, r))) for r in rags)] for m in models],
            )
        )
        tables.append(
            (
                "Domain QA by condition",
                "Percent. Token F1 and ROUGE-L score 1 for an abstention on an unanswerable question (SQuAD 2.0).",
                ["condition", *(title for _, title in METRICS), "false abstentions"],
                [
                    [c["condition"], *(_pct(c[key]) for key, _ in METRICS), _num(c["false_abstentions"], 0)]
                    for c in conds
                ],
            )
        )
    if report.get("guard"):
        tables.append(
            (
                "Answer guard",
                "RAG answers without → with the guard (rag.guard): it says the documents do not say when the question "
                "names something no document mentions (unknown_terms) or the answer holds a number or code the "
                "passages lack (ungrounded).",
                ["condition", "accuracy", "answerable acc.", "refusal acc.", "false abstentions", "blocked"],
                [
                    [
                        g["condition"],
                        *(f"{_pct(g['without'][k])} → {_pct(g['with'][k])}" for k in _GUARDED[:3]),
                        f"{_num(g['without']['false_abstentions'], 0)} → {_num(g['with']['false_abstentions'], 0)}",
                        ", ".join(f"{reason} {n}" for reason, n in g["blocked"].items()) or "none",
                    ]
                    for g in report["guard"]
                ],
            )
        )
    if report["types"]:
        tables.append(
            (
                "By question type",
                "Accuracy % (token F1 %).",
                ["condition", *report["types"]],
                [
                    [row["condition"], *(f"{_pct(row['accuracy'][t])} ({_pct(row['f1'][t])})" for t in report["types"])]
                    for row in report["by_type"]
                ],
            )
        )
    if report["choices"]:
        base = {r["set"]: r["acc"] for r in report["choices"] if r["model"] == BASE}
        tables.append(
            (
                "Multiple choice and retention",
                "Log-likelihood, percent; shots: solved questions before each one; Δ is acc against base in points "
                "(general sets: knowledge retained).",
                ["set", "model", "shots", "items", "acc", "acc_norm", "Δ acc vs base"],
                [
                    [
                        r["set"],
                        r["model"],
                        str(r.get("shots", 0)),
                        str(r["n"]),
                        _pct(r["acc"]),
                        _pct(r["acc_norm"]),
                        _delta(r, base),
                    ]
                    for r in report["choices"]
                ],
            )
        )
    if "retrieval" in report:
        ret = report["retrieval"]
        keys = [f"recall@{k}" for k in ret["ks"]] + ["mrr"]
        rows = [["all", str(ret["overall"]["n"]), *(_pct(ret["overall"][k]) for k in keys)]]
        rows += [[t, str(m["n"]), *(_pct(m[k]) for k in keys)] for t, m in ret["by_type"].items()]
        tables.append(
            (
                "Retrieval",
                f"A hit: a top-k chunk from one of the question's source documents; percent. "
                f"{ret['skipped']} questions without a source skipped.",
                ["type", "questions", *keys],
                rows,
            )
        )
    if "perplexity" in report:
        tables.append(
            (
                "Perplexity on held-out text",
                "Chunks of the val/test splits (no training pair came from them); token-weighted, sliding window; "
                "lower is better.",
                ["model", "perplexity"],
                [[m, _num(v, 2)] for m, v in report["perplexity"].items()],
            )
        )
    if "gate" in report:
        gate = report["gate"]
        tables.append(
            (
                f"Gate: {'PASSED' if gate['passed'] else 'FAILED'}",
                f"{gate.get('candidate', 'domain')} against {gate.get('reference', 'base')}.",
                ["check", "value", "threshold", "result", "detail"],
                [
                    [
                        c["name"],
                        _num(c["value"]),
                        _num(c["threshold"]),
                        Cell("pass" if c["passed"] else "FAIL", c["passed"], mark=False),
                        c["message"],
                    ]
                    for c in gate["checks"]
                ],
            )
        )
    return tables


def _sample_header(report: dict[str, Any]) -> list[str]:
    conds = [c["condition"] for c in report["conditions"]]
    seen = {k for s in report["samples"] for k in s["answers"]}
    return conds + sorted(seen - set(conds))


def document(report: dict[str, Any], pngs: dict[str, bytes]) -> Document:
    """The tables with their notes, the charts (`pngs` by file name) and the sample answers, each condition's
    marked right or wrong."""
    doc = Document(report["title"])
    for title, note, header, rows in _tables(report):
        doc.sections.append(Section(title, [Paragraph(note, note=True), Table(header, rows)]))
    if pngs:
        doc.sections.append(Section("Charts", [Chart(Path(f).stem, png, f, caption=False) for f, png in pngs.items()]))
    if report["samples"]:
        conds = _sample_header(report)
        rows = []
        for s in report["samples"]:
            answers = [s["answers"].get(cond) for cond in conds]
            cells = ["" if a is None else Cell(a["prediction"], a["correct"]) for a in answers]
            rows.append([str(s[k]) for k in ("id", "type", "question", "answer")] + cells)
        note = Paragraph("Green: scored correct; red: scored wrong.", note=True, only="html")
        doc.sections.append(
            Section("Sample answers", [note, Table(["id", "type", "question", "reference", *conds], rows)])
        )
    return doc


def write_eval_report(
    out_dir: Path,
    results: dict[str, Any],
    answers: Sequence[dict[str, Any]],
    *,
    title: str = "Hangjia evaluation",
    samples: int = 12,
) -> dict[str, Path]:
    """Write report.json, report.md, report.html and the chart PNGs to `out_dir`; returns their paths by kind
    ("json", "md", "html", and each chart's file name)."""
    report = build_report(results, answers, title=title, samples=samples)
    return reports.write(Path(out_dir), document(report, charts(report)), report, chart_files=True)
