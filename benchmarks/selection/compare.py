"""Paired bootstrap over the sample's questions: RAG-on accuracy of arm A minus arm B, each arm's per-question
correctness averaged over its seeds (`A`, `A_seed1`, `A_seed2` as far as their workspaces exist).

Usage (after benchmarks/selection/run.sh): python benchmarks/selection/compare.py selected random
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

WORKSPACES = Path(__file__).resolve().parents[2] / "workspaces"


def per_question(arm: str) -> tuple[dict[str, float], int]:
    runs = [WORKSPACES / f"selection-{a}" / "eval" / "answers.jsonl" for a in (arm, f"{arm}_seed1", f"{arm}_seed2")]
    runs = [p for p in runs if p.is_file()]
    if not runs:
        sys.exit(f"no evaluated workspace for arm {arm!r} under {WORKSPACES}")
    correct: dict[str, list[bool]] = {}
    for path in runs:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["model"] == "domain" and row["rag"]:
                correct.setdefault(row["id"], []).append(row["correct"])
    return {q: sum(v) / len(v) for q, v in correct.items()}, len(runs)


def main(a: str, b: str, resamples: int = 10_000) -> None:
    (sa, na), (sb, nb) = per_question(a), per_question(b)
    diffs = [sa[q] - sb[q] for q in sorted(sa.keys() & sb.keys())]
    rng = random.Random(0)
    boots = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) * 100 for _ in range(resamples))
    lo, hi = boots[int(0.025 * resamples)], boots[int(0.975 * resamples)]
    print(
        f"{a} ({na} runs) - {b} ({nb} runs), RAG on, {len(diffs)} questions: "
        f"{sum(diffs) / len(diffs) * 100:+.1f} points, 95% CI [{lo:+.1f}, {hi:+.1f}]"
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
