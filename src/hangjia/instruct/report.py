"""The synth/select report: what was made per generator and kind, what was dropped and why, and samples to read.

`write_report` builds one summary dict and a document presenting it, and `core.reports` writes three views:
```
report.json   every number (the summary dict itself)
report.md     the same as Markdown tables, for diffs and terminals
report.html   self-contained: PNG charts as base64 data URIs, the tables, escaped samples per generator
```
`print_summary` is the CLI's one-screen view of the same dict.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table

from hangjia.core import reports
from hangjia.core.grounding import word_count
from hangjia.core.reports import Chart, Document, Entry, Paragraph, Section, fmt
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
    reports.write(Path(out_dir), _document(summary, charts), summary)
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
    return reports.figure(7, height, layout="constrained")


def _png(fig: Figure) -> bytes:
    return reports.png(fig, dpi=100)


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


# The document -------------------------------------------------------------------------------------------------


def _headline(summary: dict[str, Any]) -> list[list[Any]]:
    rows = [["examples", summary["examples"]], ["dropped", summary["dropped"]]]
    for name in ("question_words", "answer_words"):
        s = summary[name]
        rows.append([name.replace("_", " "), f"median {fmt(s['median'])}, mean {fmt(s['mean'])}, max {s['max']}"])
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


def _document(summary: dict[str, Any], charts: dict[str, bytes]) -> Document:
    """Charts first (HTML only: no PNG files are written), then the tables that have rows, then the samples."""
    top = Section(None, [Paragraph("Charts and samples in full: report.html.", only="md")])
    top.blocks += [Chart(title, png) for title, png in charts.items()]
    doc = Document(summary["title"], [top])
    doc.sections += [Section(title, [reports.Table(h, rows)]) for title, h, rows in _tables(summary) if rows]
    doc.sections.append(Section("Samples"))
    for generator, samples in summary["samples"].items():
        entries: list[reports.Block] = [
            Entry(
                [("Q", s["question"]), ("A", s["answer"])],
                meta=[s["kind"], s["source"]],
                details=("user turn", s["user_turn"]) if "user_turn" in s else None,
            )
            for s in samples
        ]
        doc.sections.append(Section(generator, entries, level=3))
    return doc


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
        console.print(", ".join(f"{k}={fmt(v)}" for k, v in summary["counts"].items()))
