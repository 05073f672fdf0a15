"""Hangjia's half of mcq_vs_lm_eval; runs in .venv, in its own process so that its peak RSS is its own.

Loads the model as the pipeline does, reads the first `limit` rows of each test CSV (MMLU, CMMLU or C-Eval, as
`hangjia eval` reads `eval.general`) and scores them with `evaluate_mcq(norm=False)` (with `--shots N`, after the
first N rows of the subject's dev CSV): the letters " A".." D", which is all lm-eval's task scores. Writes one
JSON file with per-subject acc, every item's four log-likelihoods and prompt, and the times of model load, CSV
reading and `evaluate_mcq` (prompts + tokenising + forward passes: the scoring).
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
    parser.add_argument("--files", required=True, help="comma-separated test CSVs, one per subject")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--dtype", default="float32", help="float32 (as the pipeline loads) or bfloat16")
    parser.add_argument("--shots", type=int, default=0, help="the first N rows of the subject's dev CSV, as lm-eval")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import torch
    import transformers  # noqa: F401  imported before the load timer, as lm-eval's side imports it before its own

    from hangjia.eval.mcq import dev_file_for, evaluate_mcq, load_mcq_csv, prompt, shots_for
    from hangjia.llm.models import load_causal_lm, load_tokenizer

    start = time.perf_counter()
    model, tokenizer = load_causal_lm(Path(args.model_dir)), load_tokenizer(Path(args.model_dir))
    model.to(getattr(torch, args.dtype))
    load_s = time.perf_counter() - start

    counts = count(model)  # forward rows and Linear multiply-adds

    start = time.perf_counter()
    items, dev = [], []
    for path in map(Path, args.files.split(",")):
        items += load_mcq_csv(path)[: args.limit]
        if args.shots:
            dev += load_mcq_csv(dev_file_for(path))
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate_mcq(model, tokenizer, items, args.shots, dev, batch_size=args.batch_size, norm=False)
    scoring_s = time.perf_counter() - start

    subjects = {}
    for item, row in zip(items, result["per_item"], strict=True):
        subjects.setdefault(item.subject, []).append(
            {
                "prompt": prompt(item, shots_for(item, args.shots, dev)),
                "loglikelihoods": row["loglikelihoods"],
                "correct": row["correct"],
            }
        )
    report = {
        "versions": {"torch": torch.__version__},
        "threads": torch.get_num_threads(),
        "load_s": load_s,
        "read_s": read_s,
        "scoring_s": scoring_s,
        "total_s": read_s + scoring_s,
        "requests": 4 * len(items),
        "forward_rows": counts["rows"],
        "linear_macs": counts["macs"],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "subjects": {s: {"acc": sum(r["correct"] for r in rs) / len(rs), "items": rs} for s, rs in subjects.items()},
    }
    Path(args.out).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
