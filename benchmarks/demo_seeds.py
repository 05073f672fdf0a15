"""The demo (configs/kestrel.yaml) at several seeds: one table per seed and the mean ± sd, since one run can mislead.

Each seed is a whole `hangjia build` (its selection, its training, its eval) in ROOT/seedN with `select.seed` and
`train.seed` set to N; a seed whose workspace is already built is only read. Prints, per seed, accuracy with RAG
off/on for base and domain, the answerable questions' accuracy, refusal accuracy and false abstentions (with the
answer guard, and without it in brackets), the domain MCQ and each stage's seconds.

Usage: .venv/bin/python benchmarks/demo_seeds.py --root workspaces/demo-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from rich.console import Console

from hangjia.core.config import load_config
from hangjia.core.workspace import Workspace
from hangjia.stages.build import build

REPO = Path(__file__).resolve().parents[1]


def run(root: Path, seed: int, config: Path) -> Path:
    cfg = load_config(config)
    cfg.select.seed = cfg.train.seed = seed
    ws = Workspace(root / f"seed{seed}")
    build(ws, cfg, Console(stderr=True))
    return ws.root


def figures(ws: Path) -> dict[str, float | None]:
    results = json.loads((ws / "eval" / "results.json").read_text())
    by = {(c["model"], c["rag"]): c for c in results["conditions"]}
    on = by["domain", True]
    raw = on.get("unguarded", on)
    mcq = {r["model"]: r["acc"] for r in results.get("choices", []) if r["set"] == "domain mcq"}
    out: dict[str, float | None] = {
        "base off": by["base", False]["accuracy"],
        "base on": by["base", True]["accuracy"],
        "domain off": by["domain", False]["accuracy"],
        "domain on": on["accuracy"],
        "answerable": on["answerable_accuracy"],
        "refusal": on["refusal_accuracy"],
        "false abst.": on["false_abstentions"],
        "on, no guard": raw["accuracy"],
        "refusal, no guard": raw["refusal_accuracy"],
        "false abst., no guard": raw["false_abstentions"],
        "domain MCQ": mcq.get("domain"),
    }
    for stage in ("select", "train", "eval"):
        out[f"{stage} s"] = json.loads((ws / stage / "manifest.json").read_text()).get("duration_s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seeds", nargs="+", type=int)
    parser.add_argument("--root", type=Path, default=REPO / "workspaces" / "demo-seeds")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "kestrel.yaml")
    parser.add_argument("--report-only", action="store_true", help="read the built seeds, build nothing")
    args = parser.parse_args()
    rows = {}
    for seed in args.seeds:
        ws = args.root / f"seed{seed}" if args.report_only else run(args.root, seed, args.config)
        rows[seed] = figures(ws)
    keys = list(next(iter(rows.values())))
    print("| seed | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for seed, row in rows.items():
        print(f"| {seed} | " + " | ".join(_cell(k, row[k]) for k in keys) + " |")
    if len(rows) > 1:
        cells = []
        for k in keys:
            values = [r[k] for r in rows.values() if r[k] is not None]
            scale = 1 if ("abst" in k or k.endswith(" s")) else 100
            mean, sd = statistics.mean(values) * scale, statistics.stdev(values) * scale
            cells.append(f"{mean:.1f} ± {sd:.1f}")
        print("| mean ± sd | " + " | ".join(cells) + " |")


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "—"
    if "abst" in key or key.endswith(" s"):
        return f"{value:g}"
    return f"{100 * value:.1f}"


if __name__ == "__main__":
    main()
