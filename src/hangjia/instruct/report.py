"""The synth/select report: what was made per generator and kind, what was dropped and why, and samples to read.

`write_report` builds one summary dict and writes three views of it into out_dir:
```
report.json   every number (the summary dict itself)
report.md     the same as Markdown tables, for diffs and terminals
report.html   self-contained: PNG charts as base64 data URIs, the tables, escaped samples per generator
```
`print_summary` is the CLI's one-screen view of the same dict.
"""

from __future__ import annotations

import base64
import html
import io
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table

from hangjia.instruct.grounding import word_count
from hangjia.instruct.synth import QAPair

MAX_BARS = 25  # a bar chart with more labels than this is unreadable at report width; the tables list all


def write_report(
    out_dir: Path,
    title: str,
    pairs: list[QAPair],
    *,
    drops: dict[str, Counter],
    counts: dict[str, int | float] | None = None,
    samples_per_generator: int = 3,
    extra_tables: dict[str, list[dict]] | None = None,
) -> dict[str, Any]:
    """Write report.json, report.md and report.html into out_dir and return the summary (what report.json holds).

    `drops`: per generator or stage, how many candidates each reason removed. `counts`: headline numbers to show
    as they are. `extra_tables`: more tables by title, each a list of rows (dicts with the same keys)."""
    summary = summarize(title, pairs, drops, counts, samples_per_generator, extra_tables)
    charts = _charts(summary)
    summary["charts"] = list(charts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    (out_dir / "report.md").write_text(_markdown(summary), encoding="utf-8")
    (out_dir / "report.html").write_text(_html(summary, charts), encoding="utf-8")
    return summary


def summarize(
    title: str,
    pairs: list[QAPair],
    drops: dict[str, Counter],
    counts: dict[str, int | float] | None = None,
    samples_per_generator: int = 3,
    extra_tables: dict[str, list[dict]] | None = None,
) -> dict[str, Any]:
    """The report's numbers and samples, JSON-ready."""
    by_generator: dict[str, list[QAPair]] = {}
    for pair in pairs:
        by_generator.setdefault(pair.generator, []).append(pair)
    drops = {stage: dict(Counter(reasons).most_common()) for stage, reasons in drops.items()}
    return {
        "title": title,
        "examples": len(pairs),
        "generators": dict(Counter(p.generator for p in pairs).most_common()),
        "kinds": dict(Counter(p.kind for p in pairs).most_common()),
        "dropped": sum(sum(r.values()) for r in drops.values()),
        "drops": drops,
        "question_words": _lengths([word_count(p.question) for p in pairs]),
        "answer_words": _lengths([word_count(p.answer) for p in pairs]),
        "counts": dict(counts or {}),
        "tables": dict(extra_tables or {}),
        "samples": {g: [_sample(p) for p in _spread(ps, samples_per_generator)] for g, ps in by_generator.items()},
    }


def _lengths(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"min": 0, "median": 0, "mean": 0, "max": 0, "histogram": {"edges": [], "counts": []}}
    # One bar per word count, centred on it, up to 30 bars; a 400-word spread gets 30 wider ones.
    lo, hi = min(values), max(values)
    hist, edges = np.histogram(values, bins=min(30, hi - lo + 1), range=(lo - 0.5, hi + 0.5))
    return {
        "min": lo,
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 2),
        "max": hi,
        "histogram": {"edges": [round(float(e), 2) for e in edges], "counts": hist.tolist()},
    }


def _spread(items: list[QAPair], k: int) -> list[QAPair]:
    """k items evenly spaced through the list: the first k would all come from the first chunk."""
    n = min(k, len(items))
    return [items[i * len(items) // n] for i in range(n)] if n else []


def _sample(pair: QAPair) -> dict[str, str]:
    sample = {"question": pair.question, "answer": pair.answer, "kind": pair.kind, "source": pair.source}
    if pair.prompt:
        sample["user_turn"] = pair.prompt
    return sample


# Charts -------------------------------------------------------------------------------------------------------


def _charts(summary: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by chart title; a chart with nothing to show is left out."""
    charts: dict[str, bytes] = {}
    if summary["generators"]:
        charts["Examples per generator"] = _bars(summary["generators"], "examples", horizontal=False)
    reasons = {
        f"{stage}: {reason}" if len(summary["drops"]) > 1 else reason: n
        for stage, per_reason in summary["drops"].items()
        for reason, n in per_reason.items()
    }
    if sum(reasons.values()):
        charts["Drops per reason"] = _bars(dict(Counter(reasons).most_common(MAX_BARS)), "dropped", horizontal=True)
    if summary["examples"]:
        charts["Question length"] = _histogram(summary["question_words"]["histogram"], "words per question")
        charts["Answer length"] = _histogram(summary["answer_words"]["histogram"], "words per answer")
        kinds = dict(Counter(summary["kinds"]).most_common(MAX_BARS))
        charts["Kinds"] = _bars(kinds, "examples", horizontal=True)
    return charts


def _figure(height: float = 3.0) -> Figure:
    fig = Figure(figsize=(7, height), layout="constrained")
    FigureCanvasAgg(fig)  # render with Agg whatever backend pyplot would pick; nothing global is touched
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _bars(values: dict[str, int], xlabel: str, *, horizontal: bool) -> bytes:
    labels, heights = list(values), list(values.values())
    if horizontal:
        fig = _figure(max(2.0, 0.3 * len(labels) + 1.0))
        ax = fig.add_subplot()
        ax.barh(labels[::-1], heights[::-1], color="#4c72b0")  # largest on top
        ax.set_xlabel(xlabel)
    else:
        fig = _figure()
        ax = fig.add_subplot()
        ax.bar(labels, heights, color="#4c72b0")
        ax.set_ylabel(xlabel)
        ax.tick_params(axis="x", labelrotation=30 if len(labels) > 4 else 0)
    return _png(fig)


def _histogram(hist: dict[str, list], xlabel: str) -> bytes:
    fig = _figure()
    ax = fig.add_subplot()
    ax.stairs(hist["counts"], hist["edges"], fill=True, color="#55a868")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)


# Markdown and HTML --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def _headline(summary: dict[str, Any]) -> list[list[Any]]:
    rows = [["examples", summary["examples"]], ["dropped", summary["dropped"]]]
    for name in ("question_words", "answer_words"):
        s = summary[name]
        rows.append([name.replace("_", " "), f"median {_fmt(s['median'])}, mean {_fmt(s['mean'])}, max {s['max']}"])
    return rows + [[k, v] for k, v in summary["counts"].items()]


def _tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, headers, rows) of every table, in report order."""
    n = summary["examples"] or 1
    tables = [
        ("Summary", ["", "value"], _headline(summary)),
        ("Examples per generator", ["generator", "examples", "share"], _shares(summary["generators"], n)),
        ("Examples per kind", ["kind", "examples", "share"], _shares(summary["kinds"], n)),
        (
            "Drops",
            ["stage", "reason", "dropped"],
            [[stage, reason, k] for stage, reasons in summary["drops"].items() for reason, k in reasons.items()],
        ),
    ]
    for title, rows in summary["tables"].items():
        headers = list(dict.fromkeys(key for row in rows for key in row))
        tables.append((title, headers, [[row.get(h, "") for h in headers] for row in rows]))
    return tables


def _shares(values: dict[str, int], total: int) -> list[list[Any]]:
    return [[name, k, f"{100 * k / total:.1f}%"] for name, k in values.items()]


def _markdown(summary: dict[str, Any]) -> str:
    def cell(value: Any) -> str:
        # One line, no table breaks, no live HTML: Markdown renders raw tags, so a sample with "<details>" would
        # swallow the rest of the report.
        return html.escape(" ".join(_fmt(value).split()), quote=False).replace("|", "\\|")

    lines = [f"# {summary['title']}", "", "Charts and samples in full: report.html.", ""]
    for title, headers, rows in _tables(summary):
        if not rows:
            continue
        lines += [f"## {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        lines.append("")
    lines += ["## Samples", ""]
    for generator, samples in summary["samples"].items():
        lines += [f"### {generator}", ""]
        for s in samples:
            lines += [f"- **Q** ({cell(s['kind'])}, {cell(s['source'])}): {cell(s['question'])}"]
            lines += [f"  - **A**: {cell(s['answer'])}"]
        lines.append("")
    return "\n".join(lines)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } img { max-width: 100%; }
.sample { border-left: 3px solid #4c72b0; padding: 0.2rem 0.8rem; margin: 0.8rem 0; }
.meta { color: #666; font-size: 0.9em; } pre { white-space: pre-wrap; }
"""


def _html(summary: dict[str, Any], charts: dict[str, bytes]) -> str:
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(summary['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(summary['title'])}</h1>",
    ]
    for title, png in charts.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{esc(title)}">'
            f"<figcaption>{esc(title)}</figcaption></figure>"
        )
    for title, headers, rows in _tables(summary):
        if not rows:
            continue
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "\n".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)  # a row a line: diffable
        parts.append(f"<h2>{esc(title)}</h2>\n<table>\n<tr>{head}</tr>\n{body}\n</table>")
    parts.append("<h2>Samples</h2>")
    for generator, samples in summary["samples"].items():
        parts.append(f"<h3>{esc(generator)}</h3>")
        for s in samples:
            turn = ""
            if "user_turn" in s:
                turn = f"<details><summary>user turn</summary><pre>{esc(s['user_turn'])}</pre></details>"
            parts.append(
                f'<div class="sample"><p><b>Q</b> {esc(s["question"])}</p><p><b>A</b> {esc(s["answer"])}</p>'
                f'{turn}<p class="meta">{esc(s["kind"])} · {esc(s["source"])}</p></div>'
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _td(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="n">{_fmt(value)}</td>' if numeric else f"<td>{html.escape(_fmt(value))}</td>"


# CLI ----------------------------------------------------------------------------------------------------------


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """Examples per generator and drops per reason, as rich tables."""
    made = Table(title=f"{summary['title']}: {summary['examples']:,} examples", title_justify="left")
    made.add_column("generator")
    made.add_column("examples", justify="right")
    made.add_column("share", justify="right")
    for name, k, share in _shares(summary["generators"], summary["examples"] or 1):
        made.add_row(name, f"{k:,}", share)
    console.print(made)
    if summary["dropped"]:
        dropped = Table(title=f"dropped: {summary['dropped']:,}", title_justify="left")
        dropped.add_column("stage")
        dropped.add_column("reason")
        dropped.add_column("dropped", justify="right")
        for stage, reasons in summary["drops"].items():
            for reason, k in reasons.items():
                dropped.add_row(stage, reason, f"{k:,}")
        console.print(dropped)
    if summary["counts"]:
        console.print(", ".join(f"{k}={_fmt(v)}" for k, v in summary["counts"].items()))
