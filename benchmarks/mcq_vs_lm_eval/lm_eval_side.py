"""lm-eval's half of mcq_vs_lm_eval; runs in benchmarks/.venvs/lm-eval (no Hangjia import), from the MMLU folder.

Loads the model with lm-eval's `hf` backend, runs `simple_evaluate` on the local_mmlu_* tasks and writes one JSON
file: per-task acc, every (context, continuation, log-likelihood), and the times of model load, indexing the
tasks, the `loglikelihood` call (tokenising + forward passes: the scoring) and the whole `simple_evaluate` call.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from counting import count  # this folder is on sys.path: the script runs from it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--tasks", required=True, help="comma-separated task names")
    parser.add_argument("--include-path", required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--shots", type=int, default=0, help="num_fewshot: the first N dev rows (first_n sampler)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    lm = HFLM(pretrained=args.model_dir, device="cpu", dtype=args.dtype, batch_size=args.batch_size)
    load_s = time.perf_counter() - start

    counts = count(lm.model)  # forward rows and Linear multiply-adds
    scoring = {"s": 0.0, "requests": 0}
    loglikelihood = lm.loglikelihood

    def timed_loglikelihood(requests, *a, **kw):
        # Wraps this one instance's method (simple_evaluate looks it up by name) to time the scoring alone.
        t0 = time.perf_counter()
        out = loglikelihood(requests, *a, **kw)
        scoring["s"] += time.perf_counter() - t0
        scoring["requests"] += len(requests)
        return out

    lm.loglikelihood = timed_loglikelihood
    # Indexing lm-eval's task YAMLs (its thousands of built-in ones included) is reported, not counted as eval.
    start = time.perf_counter()
    task_manager = TaskManager(include_path=args.include_path)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=args.tasks.split(","),
        num_fewshot=args.shots,
        limit=args.limit,
        batch_size=args.batch_size,
        bootstrap_iters=0,
        log_samples=True,
        task_manager=task_manager,
    )
    total_s = time.perf_counter() - start

    tasks = {}
    for task in args.tasks.split(","):
        samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        tasks[task] = {
            "acc": results["results"][task]["acc,none"],
            "samples": [
                {
                    "doc_id": s["doc_id"],
                    "requests": [list(a) for a in s["arguments"]],
                    "loglikelihoods": [float(r[0]) for r in s["filtered_resps"]],
                    "target": s["target"],
                }
                for s in samples
            ],
        }
    report = {
        "versions": {"lm_eval": lm_eval.__version__, "torch": torch.__version__},
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "task_index_s": index_s,
        "scoring_s": scoring["s"],
        "total_s": total_s,
        "requests": scoring["requests"],
        "forward_rows": counts["rows"],
        "linear_macs": counts["macs"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tasks": tasks,
    }
    Path(args.out).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
