"""Hangjia's side of the benchmark, in its own process so its peak RSS is its own: `train_lora_sft` as
`hangjia train` calls it (nproc 1), on the pairs and arguments run.py wrote to a spec file.

    .venv/bin/python benchmarks/train_vs_llamafactory/hangjia_side.py RUN_DIR/hangjia/spec.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hangjia.core.config import TrainConfig
from hangjia.train.sft import train_lora_sft


def main(spec_path: Path) -> None:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    out_dir = Path(spec["out_dir"])
    pairs = [tuple(p) for p in spec["train_pairs"]]
    started = time.perf_counter()
    # No validation pairs: LLaMA-Factory runs no evaluation either (with them, train_runtime would include one).
    metrics = train_lora_sft(Path(spec["base_dir"]), pairs, [], out_dir, TrainConfig.model_validate(spec["args"]))
    metrics["process_train_call_s"] = time.perf_counter() - started
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
