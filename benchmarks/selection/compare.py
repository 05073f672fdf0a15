"""Arm A against arm B on RAG-on accuracy, two ways:
- per question: a paired bootstrap over the sample's questions, each arm's per-question correctness averaged over
  its seeds (`A` and every evaluated `A_seedN`);
- per run: an exact one-sided permutation test over the runs' accuracies (is A's mean above B's by more than the
  seeds' spread explains?), where a run is one seed's whole build: its subset, its training, its eval.
`--earlier-a` / `--earlier-b` add runs measured before whose workspaces are not here (their accuracies, from
benchmarks/README.md); they enter the per-run test only.

Usage (after benchmarks/selection/run.sh): python benchmarks/selection/compare.py selected random
                                           [--earlier-a 15.0,18.8 --earlier-b 25.0,11.2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
from pathlib import Path

WORKSPACES = Path(__file__).resolve().parents[2] / "workspaces"


def per_question(arm: str) -> tuple[dict[str, float], list[float]]:
    """Each question's RAG-on correctness averaged over the arm's runs, and each run's accuracy (%)."""
    folders = [WORKSPACES / f"selection-{arm}", *sorted(WORKSPACES.glob(f"selection-{arm}_seed[0-9]*"))]
    runs = [p / "eval" / "answers.jsonl" for p in folders if (p / "eval" / "answers.jsonl").is_file()]
    if not runs:
        sys.exit(f"no evaluated workspace for arm {arm!r} under {WORKSPACES}")
    correct: dict[str, list[bool]] = {}
    accuracies = []
    for path in runs:
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows = [r for r in rows if r["model"] == "domain" and r["rag"]]
        accuracies.append(100 * sum(r["correct"] for r in rows) / len(rows))
        for row in rows:
            correct.setdefault(row["id"], []).append(row["correct"])
    return {q: sum(v) / len(v) for q, v in correct.items()}, accuracies


def permutation_p(runs_a: list[float], runs_b: list[float]) -> float:
    """One-sided exact p-value: the share of the ways to split all runs into groups of these sizes whose mean
    difference is at least the observed one."""
    pooled, k = runs_a + runs_b, len(runs_a)
    observed = statistics.mean(runs_a) - statistics.mean(runs_b)
    total = sum(pooled)
    splits = [sum(c) for c in itertools.combinations(pooled, k)]
    diffs = [s / k - (total - s) / (len(pooled) - k) for s in splits]
    return sum(d >= observed - 1e-9 for d in diffs) / len(diffs)


def main(a: str, b: str, earlier_a: list[float], earlier_b: list[float], resamples: int = 10_000) -> None:
    (sa, runs_a), (sb, runs_b) = per_question(a), per_question(b)
    for arm, runs in ((a, runs_a), (b, runs_b)):
        print(
            f"{arm}: {statistics.mean(runs):.1f} ± {statistics.stdev(runs) if len(runs) > 1 else 0:.1f} over "
            f"{len(runs)} runs (" + ", ".join(f"{r:.1f}" for r in runs) + ")"
        )
    diffs = [sa[q] - sb[q] for q in sorted(sa.keys() & sb.keys())]
    rng = random.Random(0)
    boots = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) * 100 for _ in range(resamples))
    lo, hi = boots[int(0.025 * resamples)], boots[int(0.975 * resamples)]
    print(
        f"{a} ({len(runs_a)} runs) - {b} ({len(runs_b)} runs), RAG on, {len(diffs)} questions: "
        f"{sum(diffs) / len(diffs) * 100:+.1f} points, 95% CI [{lo:+.1f}, {hi:+.1f}]"
    )
    all_a, all_b = runs_a + earlier_a, runs_b + earlier_b
    print(
        f"per run ({len(all_a)} vs {len(all_b)}, earlier runs included): {a} {statistics.mean(all_a):.1f} ± "
        f"{statistics.stdev(all_a):.1f}, {b} {statistics.mean(all_b):.1f} ± {statistics.stdev(all_b):.1f}, "
        f"difference {statistics.mean(all_a) - statistics.mean(all_b):+.1f} points, one-sided permutation "
        f"p = {permutation_p(all_a, all_b):.3f}"
    )


def _accuracies(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--earlier-a", type=_accuracies, default=[], help="comma-separated RAG-on accuracies, %%")
    parser.add_argument("--earlier-b", type=_accuracies, default=[], help="comma-separated RAG-on accuracies, %%")
    args = parser.parse_args()
    main(args.a, args.b, args.earlier_a, args.earlier_b)
