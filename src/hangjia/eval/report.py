"""The evaluation report: report.json (the numbers), report.md (tables) and report.html (tables, charts, answers).

It reads what `eval_stage.evaluate` writes: results.json (conditions, choices, and where present retrieval, gate and
perplexity) and the answer rows of answers.jsonl. Charts are matplotlib Figures drawn with Agg (no pyplot, no
display), saved as PNG files next to the report and embedded in the HTML as data URIs, so report.html is one file
that can be mailed or attached to a CI run.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BASE = "base"  # engine.BASE, not imported: the engine module pulls in the model stack
METRICS = (  # (key in a condition summary, column title)
    ("accuracy", "accuracy"),
    ("f1", "token F1"),
    ("rouge_l", "ROUGE-L"),
    ("answerable_accuracy", "answerable acc."),
    ("refusal_accuracy", "refusal acc."),
    ("judge_accuracy", "judge acc."),  # only with eval.judge; "—" otherwise
)


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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _grouped_bars(groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> bytes:
    """One cluster of bars per group, one bar per series; None draws no bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 1.1 * len(groups) * max(len(series), 1) ** 0.5 + 2), 3.4))
    FigureCanvasAgg(fig)
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
    return _png(fig)


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


# ---- tables, shared by Markdown and HTML --------------------------------------------------------------------------


def _tables(report: dict[str, Any]) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(section title, note, header, rows) in report order; cells are plain text, escaped by each renderer."""
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
                    [c["name"], _num(c["value"]), _num(c["threshold"]), "pass" if c["passed"] else "FAIL", c["message"]]
                    for c in gate["checks"]
                ],
            )
        )
    return tables


def _sample_header(report: dict[str, Any]) -> list[str]:
    conds = [c["condition"] for c in report["conditions"]]
    seen = {k for s in report["samples"] for k in s["answers"]}
    return conds + sorted(seen - set(conds))


def _answer_cell(sample: dict[str, Any], cond: str) -> tuple[str, bool | None]:
    a = sample["answers"].get(cond)
    return ("", None) if a is None else (a["prediction"], a["correct"])


# ---- Markdown -----------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: dict[str, Any], chart_files: Sequence[str] = ()) -> str:
    lines = [f"# {_md_cell(report['title'])}", ""]
    for title, note, header, rows in _tables(report):
        lines += [f"## {_md_cell(title)}", "", _md_cell(note), "", *_md_table(header, rows), ""]
    if chart_files:
        lines += ["## Charts", ""] + [f"![{Path(f).stem}]({f})" for f in chart_files] + [""]
    if report["samples"]:
        conds = _sample_header(report)
        rows = []
        for s in report["samples"]:
            cells = []
            for cond in conds:
                text, ok = _answer_cell(s, cond)
                cells.append("" if ok is None else f"{'✓' if ok else '✗'} {text}")
            rows.append([s["id"], s["type"], s["question"], s["answer"], *cells])
        lines += ["## Sample answers", "", *_md_table(["id", "type", "question", "reference", *conds], rows), ""]
    return "\n".join(lines)


# ---- HTML ---------------------------------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.ok { background: #eaf7ea; } td.bad { background: #fbeaea; }
p.note { color: #555; margin: .2em 0; }
img { max-width: 100%; margin: .5em 0 1.5em; }
"""


def _html_table(header: list[str], rows: list[list[str]], classes: list[list[str]] | None = None) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            cls = classes[r][c] if classes else ""
            cells.append(f'<td class="{cls}">{e(cell)}</td>' if cls else f"<td>{e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(report['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(report['title'])}</h1>",
    ]
    for title, note, header, rows in _tables(report):
        classes = None
        if title.startswith("Gate"):
            classes = [["", "", "", "ok" if row[3] == "pass" else "bad", ""] for row in rows]
        parts += [f"<h2>{e(title)}</h2>", f'<p class="note">{e(note)}</p>', _html_table(header, rows, classes)]
    if pngs:
        parts.append("<h2>Charts</h2>")
        for name, data in pngs.items():
            src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            parts.append(f'<img alt="{e(Path(name).stem)}" src="{src}">')
    if report["samples"]:
        conds = _sample_header(report)
        rows, classes = [], []
        for s in report["samples"]:
            cells = [_answer_cell(s, cond) for cond in conds]
            rows.append([s["id"], s["type"], s["question"], s["answer"], *(text for text, _ in cells)])
            classes.append(["", "", "", "", *("" if ok is None else ("ok" if ok else "bad") for _, ok in cells)])
        parts += [
            "<h2>Sample answers</h2>",
            '<p class="note">Green: scored correct; red: scored wrong.</p>',
            _html_table(["id", "type", "question", "reference", *conds], rows, classes),
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report(results, answers, title=title, samples=samples)
    pngs = charts(report)
    paths: dict[str, Path] = {}
    for name, data in pngs.items():
        paths[name] = out_dir / name
        paths[name].write_bytes(data)
    paths["json"] = out_dir / "report.json"
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["md"] = out_dir / "report.md"
    paths["md"].write_text(render_markdown(report, list(pngs)), encoding="utf-8")
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(render_html(report, pngs), encoding="utf-8")
    return paths
