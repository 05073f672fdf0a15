"""mcq_vs_lm_eval: Hangjia's MCQ scorer against lm-evaluation-harness on the same model and MMLU slice (or CMMLU's or
C-Eval's, with --benchmark).

Both score the slice (0-shot unless --shots) by log-likelihood of " A".." D" after lm-eval's prompt for that benchmark
(MMLU's English one; CMMLU's and C-Eval's Chinese description and "答案："), on CPU in float32
(unless --dtype) with the same batch size, each in its own process (lm-eval in benchmarks/.venvs/lm-eval, made by
setup.sh; Hangjia in .venv), so each peak RSS is its own. Timed, per side:
  load     model + tokenizer (reported, not in items/s);
  scoring  lm-eval: its `loglikelihood` call (tokenising, batching, forward passes);
           Hangjia: `evaluate_mcq` (prompts, tokenising, batching, forward passes)  -> the headline items/s;
  whole    lm-eval: `simple_evaluate` (CSV loading, prompts, scoring, metrics; its task index is built before);
           Hangjia: reading the CSVs + `evaluate_mcq`.
Items/s counts questions. The script also checks that both sides built the same prompts and compares every
log-likelihood, and counts each side's forward rows and `nn.Linear` multiply-adds (counting.py): the arithmetic
that bounds the scoring ratio where the GEMMs run near the cores' peak.

Usage: .venv/bin/python benchmarks/mcq_vs_lm_eval/run.py [--benchmark mmlu|cmmlu|ceval] [--batch-size 8] [--limit 50]
                                                          [--shots 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LM_EVAL_PYTHON = REPO / "benchmarks/.venvs/lm-eval/bin/python"
# Each benchmark's default slice, and where its test and dev CSVs lie under shared/benchmarks/<benchmark>.
SUBJECTS = {
    "mmlu": ["high_school_geography", "high_school_biology", "nutrition", "miscellaneous"],
    "cmmlu": ["anatomy", "high_school_geography", "nutrition", "chinese_history"],
    "ceval": ["college_economics", "physician", "teacher_qualification", "civil_servant"],
}
TEST_FILE = {"mmlu": "test/{}_test.csv", "cmmlu": "test/{}.csv", "ceval": "val/{}_val.csv"}


def run_side(name: str, command: list[str], cwd: Path) -> float:
    """Runs one side in its own process; returns the process's wall time (imports included)."""
    # Everything is local: never let transformers / datasets try the network.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    print(f"[{name}] {' '.join(command)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env)
    if done.returncode != 0:
        sys.exit(f"{name} failed (exit {done.returncode}); its output is above.")
    return time.perf_counter() - start


def compare(lm: dict, hj: dict, subjects: list[str], benchmark: str) -> dict:
    """Same prompts? Same predictions? Largest log-likelihood gap? Over items both sides scored."""
    same_prompt = same_pred = n = 0
    max_gap = 0.0
    for subject in subjects:
        lm_items = lm["tasks"][f"local_{benchmark}_{subject}"]["samples"]
        hj_items = hj["subjects"][subject]["items"]
        if len(lm_items) != len(hj_items):
            sys.exit(f"{subject}: lm-eval scored {len(lm_items)} items, Hangjia {len(hj_items)}.")
        for a, b in zip(lm_items, hj_items, strict=True):
            n += 1
            contexts = {ctx for ctx, _ in a["requests"]}
            conts = [cont for _, cont in a["requests"]]
            same_prompt += contexts == {b["prompt"]} and conts == [" A", " B", " C", " D"]
            lla, llb = a["loglikelihoods"], b["loglikelihoods"]
            same_pred += max(range(4), key=lla.__getitem__) == max(range(4), key=llb.__getitem__)
            max_gap = max(max_gap, *(abs(x - y) for x, y in zip(lla, llb, strict=True)))
    return {"items": n, "same_prompt": same_prompt, "same_prediction": same_pred, "max_loglikelihood_gap": max_gap}


def table(lm: dict, hj: dict, subjects: list[str], check: dict, limit: int, shots: int, benchmark: str) -> str:
    n = check["items"]
    lm_acc = {s: lm["tasks"][f"local_{benchmark}_{s}"]["acc"] for s in subjects}
    hj_acc = {s: hj["subjects"][s]["acc"] for s in subjects}
    counts = {s: len(hj["subjects"][s]["items"]) for s in subjects}
    mean = {side: sum(acc[s] * counts[s] for s in subjects) / n for side, acc in (("lm", lm_acc), ("hj", hj_acc))}
    lines = [
        "| | lm-eval | Hangjia |",
        "|---|---:|---:|",
        *(f"| acc {s} ({counts[s]}) | {100 * lm_acc[s]:.1f} | {100 * hj_acc[s]:.1f} |" for s in subjects),
        f"| **acc, all {n} items** | **{100 * mean['lm']:.1f}** | **{100 * mean['hj']:.1f}** |",
        f"| model load, s | {lm['load_s']:.2f} | {hj['load_s']:.2f} |",
        "| lm-eval task index (not in whole eval) / Hangjia CSV read (in it), s | "
        f"{lm['task_index_s']:.2f} | {hj['read_s']:.2f} |",
        f"| scoring, s | {lm['scoring_s']:.2f} | {hj['scoring_s']:.2f} |",
        f"| **items/s (scoring)** | **{n / lm['scoring_s']:.2f}** | **{n / hj['scoring_s']:.2f}** |",
        f"| whole eval, s | {lm['total_s']:.2f} | {hj['total_s']:.2f} |",
        f"| items/s (whole eval) | {n / lm['total_s']:.2f} | {n / hj['total_s']:.2f} |",
        "| requests / forward rows | "
        f"{lm['requests']} / {lm['forward_rows']} | {hj['requests']} / {hj['forward_rows']} |",
        f"| Linear multiply-adds (counted), G | {lm['linear_macs'] / 1e9:.0f} | {hj['linear_macs'] / 1e9:.0f} |",
        f"| process wall, s (imports included) | {lm['process_s']:.1f} | {hj['process_s']:.1f} |",
        f"| peak RSS, MiB | {lm['peak_rss_mib']:.0f} | {hj['peak_rss_mib']:.0f} |",
    ]
    gap = abs(mean["lm"] - mean["hj"]) * 100
    ratio = lm["scoring_s"] / hj["scoring_s"]
    whole = lm["total_s"] / hj["total_s"]
    lines += [
        "",
        f"|Δ acc| = {gap:.2f} points (target ≤ 0.5) · speed Hangjia / lm-eval = **{ratio:.2f}×** scoring, "
        f"{whole:.2f}× whole eval (target ≥ 2×); Linear multiply-adds lm-eval / Hangjia "
        f"{lm['linear_macs'] / hj['linear_macs']:.2f}×",
        f"same prompts: {check['same_prompt']}/{n} · same prediction: {check['same_prediction']}/{n} · "
        f"largest |Δ log-likelihood|: {check['max_loglikelihood_gap']:.2e}",
        f"lm-eval {lm['versions']['lm_eval']}, torch {lm['versions']['torch']} (both sides: "
        f"{hj['versions']['torch']}), {hj['threads']} torch threads, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {limit} items per subject, {shots}-shot",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8, help="forward rows per batch, both sides (default 8)")
    parser.add_argument("--limit", type=int, default=50, help="first N test questions per subject (default 50)")
    parser.add_argument(
        "--shots", type=int, default=0, help="solved dev questions before each one, both sides (default 0; MMLU's 5)"
    )
    parser.add_argument("--benchmark", default="mmlu", choices=sorted(SUBJECTS), help="whose slice (default mmlu)")
    parser.add_argument("--subjects", help="comma-separated subjects (default: the benchmark's slice of four)")
    parser.add_argument(
        "--data", "--mmlu", type=Path, help="the benchmark's folder (default ../shared/benchmarks/<benchmark>)"
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and activations, both sides"
    )
    parser.add_argument("--model", default="embedded", help="'embedded' or a local Hugging Face model folder")
    parser.add_argument("--json", type=Path, help="also write both sides' full reports here")
    args = parser.parse_args()

    from hangjia.llm.models import resolve_base

    bench = args.benchmark
    subjects = args.subjects.split(",") if args.subjects else SUBJECTS[bench]
    data = (args.data or REPO.parent / "shared/benchmarks" / bench).resolve()
    files = [data / TEST_FILE[bench].format(s) for s in subjects]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        sys.exit(f"No test file {', '.join(missing)}; pass --data or fix --subjects.")
    unknown = [s for s in subjects if not (HERE / "tasks" / f"local_{bench}_{s}.yaml").is_file()]
    if unknown:
        sys.exit(f"No lm-eval task YAML for {', '.join(unknown)} in {HERE / 'tasks'}; add local_{bench}_<subject>.yaml")
    if not LM_EVAL_PYTHON.is_file():
        sys.exit(f"{LM_EVAL_PYTHON} is missing; run benchmarks/mcq_vs_lm_eval/setup.sh first.")
    model_dir = str(resolve_base(args.model))
    common = ["--model-dir", model_dir, "--batch-size", str(args.batch_size), "--limit", str(args.limit)]
    common += ["--shots", str(args.shots), "--dtype", args.dtype]

    with tempfile.TemporaryDirectory() as tmp:
        lm_out, hj_out = Path(tmp) / "lm_eval.json", Path(tmp) / "hangjia.json"
        tasks = ",".join(f"local_{bench}_{s}" for s in subjects)
        lm_cmd = [str(LM_EVAL_PYTHON), str(HERE / "lm_eval_side.py"), *common, "--tasks", tasks]
        lm_cmd += ["--include-path", str(HERE / "tasks"), "--out", str(lm_out)]
        # lm-eval's task YAMLs name the CSVs relative to the benchmark's folder.
        lm_process_s = run_side("lm-eval", lm_cmd, cwd=data)
        hj_cmd = [sys.executable, str(HERE / "hangjia_side.py"), *common, "--files", ",".join(map(str, files))]
        hj_cmd += ["--out", str(hj_out)]
        hj_process_s = run_side("hangjia", hj_cmd, cwd=REPO)
        lm = json.loads(lm_out.read_text(encoding="utf-8")) | {"process_s": lm_process_s}
        hj = json.loads(hj_out.read_text(encoding="utf-8")) | {"process_s": hj_process_s}

    check = compare(lm, hj, subjects, bench)
    print(
        f"\n## mcq_vs_lm_eval: {bench}, {args.shots}-shot, {args.dtype}, batch size {args.batch_size}, "
        f"model {model_dir}\n"
    )
    print(table(lm, hj, subjects, check, args.limit, args.shots, bench))
    if args.json:
        args.json.write_text(json.dumps({"lm_eval": lm, "hangjia": hj, "check": check}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
