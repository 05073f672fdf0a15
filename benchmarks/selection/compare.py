"""Paired bootstrap over the sample's questions: RAG-on accuracy of arm A minus arm B, each arm's per-question
correctness averaged over its seeds (`A` and every evaluated `A_seedN`), with each run's own accuracy.

Usage (after benchmarks/selection/run.sh): python benchmarks/selection/compare.py selected random
"""

from __future__ import annotations

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


def main(a: str, b: str, resamples: int = 10_000) -> None:
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


if __name__ == "__main__":
    main(*sys.argv[1:3])
