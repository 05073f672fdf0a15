"""LoRA SFT throughput and loss: Hangjia's `train_lora_sft` against LLaMA-Factory, same run, same machine.

    benchmarks/train_vs_llamafactory/setup.sh                 # once: LLaMA-Factory in benchmarks/.venvs/llamafactory
    .venv/bin/python benchmarks/train_vs_llamafactory/run.py  # sample domain's SFT set, configs/kestrel.yaml `train:`
    .venv/bin/python benchmarks/train_vs_llamafactory/run.py --limit 16 --max-steps 2   # smoke (3 min)

Both train the same base folder (the embedded SmolLM2-135M-Instruct safetensors) on the same rows: Hangjia reads
select/train.jsonl the way `hangjia train` does, LLaMA-Factory reads the same rows from the Alpaca export that
`hangjia select` writes beside it (select/export, with dataset_info.json). Before training, the export is checked
row by row against train.jsonl; after, LLaMA-Factory's tokenized dataset (its `tokenized_path`) is compared token by
token with TRL's, loss mask included. Every hyperparameter comes from the config's `train:` section and is written
into LLaMA-Factory's YAML explicitly, optimizer settings as our trainer resolved them.

Each side runs in its own process, one after the other (LLaMA-Factory first), so peak RSS is its own
(os.wait4). Hangjia runs three times by default: unpacked, packed, and packed with the shared prefix
(TrainConfig's default). Reported per run:
  samples/s    examples trained on (examples × epochs, or max_steps × batch) / the trainer's train_runtime
  tokens/s     the same examples' non-pad tokens (prompt + answer, as tokenized) / train_runtime
  final loss   mean logged training loss over the last 10% of optimizer steps (at least one step)
  mean loss    mean over all steps (the Trainer's train_loss, from the per-step log)
Outputs (logs, LLaMA-Factory's YAML, per-step losses, results.json/.md) go to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HANGJIA_PY = ROOT / ".venv" / "bin" / "python"
LF_VENV = ROOT / "benchmarks" / ".venvs" / "llamafactory"
EXPORT_NAME = "hangjia_train"  # the dataset `hangjia select` registers in select/export/dataset_info.json
# LLaMA-Factory's template for SmolLM2 (data/template.py): ChatML turns, "{{content}}<|im_end|>\n" as the answer,
# the tokenizer's own chat_template.jinja exactly; its default_system applies only to rows without a system column.
LF_TEMPLATE = "smollm2"
# Hangjia's runs: name in the report, overrides of the train section. `shared` is what `hangjia train` does by default.
HANGJIA_RUNS = {
    "unpacked": ("hangjia", {"packing": False, "share_prefix": False}),
    "packed": ("hangjia (packing)", {"packing": True, "share_prefix": False}),
    "shared": ("hangjia (packing, shared prefix)", {"packing": True, "share_prefix": True}),
}


def main() -> None:
    opts = _parse()
    if unknown := set(opts.hangjia) - set(HANGJIA_RUNS):
        sys.exit(f"--hangjia: unknown run(s) {', '.join(sorted(unknown))}; use {', '.join(HANGJIA_RUNS)}.")
    load_before = os.getloadavg()[0]  # other work on the machine skews both sides; the report says how much
    ws = opts.workspace.resolve()
    prepare_data(opts.config, ws)
    out = opts.out.resolve() if opts.out else ws / "bench-train-vs-llamafactory"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    from hangjia.core.config import load_config
    from hangjia.core.workspace import Workspace
    from hangjia.llm.models import resolve_base
    from hangjia.stages.train import selected_pairs  # what `hangjia train` uses, so the data and settings are its
    from hangjia.train.sft import sft_settings

    cfg = load_config(opts.config)
    base_dir = resolve_base(cfg.train.base_model)
    pairs = selected_pairs(Workspace(ws))[0]
    if opts.limit:
        pairs = pairs[: opts.limit]
    export_dir = ws / "select" / "export"
    check_export(export_dir, pairs)
    overrides = {"epochs": opts.epochs, "batch_size": opts.batch_size, "max_steps": opts.max_steps}
    args = sft_settings(cfg.train).model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if args.bf16 or args.nproc != 1 or args.accelerate_config or args.method != "lora":
        sys.exit("This benchmark compares fp32 LoRA in one process; set train.bf16 false and train.nproc 1.")
    ours = our_tokenization(base_dir, pairs, args, out / "tokenize")

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    runs: dict[str, dict[str, Any]] = {}
    if not opts.skip_llamafactory:
        runs["llamafactory"] = run_llamafactory(
            base_dir, export_dir, len(pairs), args, ours["trainer_args"], out, opts, env
        )
    for variant in opts.hangjia:
        name, over = HANGJIA_RUNS[variant]
        runs[name] = run_hangjia(base_dir, pairs, args.model_copy(update=over), out, name, env)

    tokens = {"hangjia": ours["lengths"]}
    identity = None
    if "llamafactory" in runs:
        theirs = lf_tokenization(out / "llamafactory" / "tokenized")
        tokens["llamafactory"] = [len(ids) for ids, _ in theirs]
        identity = compare_tokens(ours["examples"], theirs)
    rows = [
        summarise(name, run, tokens["llamafactory" if name == "llamafactory" else "hangjia"], args)
        for name, run in runs.items()
    ]
    report = render(rows, identity, args, pairs, base_dir, load_before)
    print(report)
    (out / "results.md").write_text(report + "\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"rows": rows, "tokens": identity}, indent=2), encoding="utf-8")
    print(f"\nwritten: {out}/results.md, results.json, logs per run")


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "kestrel.yaml", help="hangjia.yaml (data + train)")
    p.add_argument(
        "--workspace",
        type=Path,
        default=ROOT / "workspaces" / "train_vs_llamafactory",
        help="its select/train.jsonl and select/export are reused; built (ingest, synth, select) if missing",
    )
    p.add_argument("--out", type=Path, default=None, help="default: WORKSPACE/bench-train-vs-llamafactory (replaced)")
    p.add_argument("--epochs", type=float, default=None, help="default: the config's train.epochs")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    p.add_argument("--max-steps", type=int, default=None, help="stop both after N optimizer steps (smoke runs)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N examples only (smoke runs)")
    p.add_argument(
        "--hangjia",
        type=lambda text: [v.strip() for v in text.split(",") if v.strip()],
        default=list(HANGJIA_RUNS),
        help=f"Hangjia's runs, comma-separated, of {', '.join(HANGJIA_RUNS)} (default: all)",
    )
    p.add_argument(
        "--lf-gradient-checkpointing",
        action="store_true",
        help="leave LLaMA-Factory's default (gradient checkpointing on) instead of matching ours (off)",
    )
    p.add_argument("--skip-llamafactory", action="store_true", help="Hangjia's side only")
    return p.parse_args()


# Data -----------------------------------------------------------------------------------------------------------


def prepare_data(config: Path, ws: Path) -> None:
    """Run ingest, synth and select into `ws` unless its select stage output is already there."""
    if (ws / "select" / "train.jsonl").is_file() and (ws / "select" / "export" / "dataset_info.json").is_file():
        print(f"reusing {ws / 'select'}")
        return
    for stage in ("ingest", "synth", "select"):  # each skips itself when its output is current
        print(f"hangjia {stage} --config {config} --workspace {ws}", flush=True)
        cmd = [str(ROOT / ".venv" / "bin" / "hangjia"), stage, "--config", str(config), "--workspace", str(ws)]
        subprocess.run(cmd, check=True, cwd=ROOT)


def check_export(export_dir: Path, pairs: list[tuple[str, str]]) -> None:
    """LLaMA-Factory's rows must be ours: same order, same user turn, same answer, the same system prompt."""
    from hangjia.core.prompts import SYSTEM_PROMPT

    info = json.loads((export_dir / "dataset_info.json").read_text(encoding="utf-8"))[EXPORT_NAME]
    rows = [json.loads(line) for line in (export_dir / info["file_name"]).read_text(encoding="utf-8").splitlines()]
    if info.get("formatting", "alpaca") != "alpaca" or len(rows) < len(pairs):
        sys.exit(f"{export_dir}: expected an Alpaca export with at least {len(pairs)} rows; re-run `hangjia select`.")
    for i, (question, answer) in enumerate(pairs):
        r = rows[i]
        if (r["instruction"], r["input"], r["output"], r.get("system")) != (question, "", answer, SYSTEM_PROMPT):
            sys.exit(f"{export_dir / info['file_name']} row {i + 1} differs from select/train.jsonl; re-run select.")


def our_tokenization(base_dir: Path, pairs: list[tuple[str, str]], args, scratch: Path) -> dict[str, Any]:
    """TRL's tokenized rows (input_ids, loss mask) and the optimizer settings our trainer resolved, from the
    same `build_trainer` that `train_lora_sft` calls; built here, in the parent, so it costs neither side."""
    from hangjia.train.sft import build_trainer

    trainer = build_trainer(base_dir, pairs, [], scratch, args)
    ds = trainer.train_dataset
    examples = [
        (list(ids), [int(t != -100) for t in labels]) for ids, labels in zip(ds["input_ids"], ds["labels"], strict=True)
    ]
    a = trainer.args
    resolved = {
        k: getattr(a, k)
        for k in (
            "optim",
            "weight_decay",
            "adam_beta1",
            "adam_beta2",
            "adam_epsilon",
            "max_grad_norm",
            "lr_scheduler_type",
            "warmup_steps",
            "seed",
            "data_seed",
            "dataloader_num_workers",
            "dataloader_drop_last",
        )
    }
    resolved["optim"] = str(getattr(a.optim, "value", a.optim))
    resolved["lr_scheduler_type"] = str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type))
    del trainer
    shutil.rmtree(scratch, ignore_errors=True)
    return {"examples": examples, "lengths": [len(ids) for ids, _ in examples], "trainer_args": resolved}


def lf_tokenization(path: Path) -> list[tuple[list[int], list[int]]]:
    """LLaMA-Factory's tokenized training rows (saved by its `tokenized_path`) as (input_ids, loss mask)."""
    from datasets import load_from_disk

    ds = load_from_disk(str(path))["train"]  # a DatasetDict (train, and eval when there is one)
    return [
        (list(ids), [int(t != -100) for t in labels]) for ids, labels in zip(ds["input_ids"], ds["labels"], strict=True)
    ]


def compare_tokens(ours: list[tuple[list[int], list[int]]], theirs: list[tuple[list[int], list[int]]]) -> dict:
    same_ids = sum(a[0] == b[0] for a, b in zip(ours, theirs, strict=False))
    same_mask = sum(a == b for a, b in zip(ours, theirs, strict=False))
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    return {
        "examples": [len(ours), len(theirs)],
        "identical_input_ids": same_ids,
        "identical_input_ids_and_loss_mask": same_mask,
        "input_tokens": [sum(len(a[0]) for a in ours), sum(len(b[0]) for b in theirs)],
        "loss_tokens": [sum(sum(a[1]) for a in ours), sum(sum(b[1]) for b in theirs)],
        "first_difference": first,
    }


# The two trainers ---------------------------------------------------------------------------------------------


def llamafactory_config(base_dir, export_dir, n, args, resolved, run_dir, gradient_checkpointing) -> dict[str, Any]:
    """LLaMA-Factory's YAML: every setting that shapes the training stated, matched to `args` and our trainer."""
    return {
        # model
        "model_name_or_path": str(base_dir),
        "trust_remote_code": False,
        # method
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": args.lora_r,
        "lora_alpha": args.lora_alpha,
        "lora_dropout": args.lora_dropout,
        "lora_target": ",".join(args.target_modules),
        "use_rslora": False,
        "use_dora": False,
        "disable_gradient_checkpointing": not gradient_checkpointing and not args.gradient_checkpointing,
        # data: our export, unchanged; the first n rows (max_samples takes a prefix)
        "dataset_dir": str(export_dir),
        "dataset": EXPORT_NAME,
        "max_samples": n,
        "template": LF_TEMPLATE,
        "cutoff_len": args.max_length,
        "train_on_prompt": False,  # loss on the answer only, as ours
        "mask_history": False,
        "packing": False,  # its SFT default
        "neat_packing": False,
        "overwrite_cache": True,
        "preprocessing_num_workers": None,
        "tokenized_path": str(run_dir / "tokenized"),  # saved for the token-by-token check, then trained on
        "val_size": 0.0,
        # training
        "output_dir": str(run_dir / "output"),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": args.epochs,
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": resolved["lr_scheduler_type"],
        "warmup_steps": resolved["warmup_steps"],  # < 1: a share of the steps, as ours
        "optim": resolved["optim"],
        "weight_decay": resolved["weight_decay"],
        "adam_beta1": resolved["adam_beta1"],
        "adam_beta2": resolved["adam_beta2"],
        "adam_epsilon": resolved["adam_epsilon"],
        "max_grad_norm": resolved["max_grad_norm"],
        "seed": resolved["seed"],
        "data_seed": resolved["data_seed"],
        "bf16": False,  # with neither, LLaMA-Factory loads the model in its config dtype: float32, as ours
        "fp16": False,
        "use_cpu": True,
        "dataloader_num_workers": resolved["dataloader_num_workers"],
        "dataloader_pin_memory": False,
        "dataloader_drop_last": resolved["dataloader_drop_last"],
        "eval_strategy": "no",
        "logging_steps": 1,
        "save_strategy": "no",  # the adapter is written once, after train_runtime stops, as ours
        "plot_loss": False,
        "report_to": "none",
        "disable_tqdm": True,
    }


def run_llamafactory(base_dir, export_dir, n, args, resolved, out, opts, env) -> dict[str, Any]:
    import yaml

    cli = LF_VENV / "bin" / "llamafactory-cli"
    if not cli.is_file():
        sys.exit(f"{cli} is missing; run benchmarks/train_vs_llamafactory/setup.sh first.")
    run_dir = out / "llamafactory"
    run_dir.mkdir()
    config = llamafactory_config(base_dir, export_dir, n, args, resolved, run_dir, opts.lf_gradient_checkpointing)
    yaml_path = run_dir / "train.yaml"
    yaml_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    print(f"llamafactory: {cli} train {yaml_path}", flush=True)
    proc = run_child([str(cli), "train", str(yaml_path)], run_dir / "log.txt", env)
    output = run_dir / "output"
    results = json.loads((output / "train_results.json").read_text(encoding="utf-8"))
    history = json.loads((output / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    steps = max((h["step"] for h in history if "loss" in h), default=0)
    return {
        **proc,
        "train_runtime_s": results["train_runtime"],
        "losses": losses,
        "steps": steps,
        "trainer_samples_per_second": results.get("train_samples_per_second"),
    }


def run_hangjia(base_dir, pairs, args, out, name, env) -> dict[str, Any]:
    run_dir = out / name.replace(" ", "_").replace("(", "").replace(")", "")
    run_dir.mkdir()
    spec = {
        "base_dir": str(base_dir),
        "train_pairs": pairs,
        "out_dir": str(run_dir),
        "args": args.model_dump(mode="json"),
    }
    (run_dir / "spec.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    cmd = [str(HANGJIA_PY), str(HERE / "hangjia_side.py"), str(run_dir / "spec.json")]
    print(f"{name}: {' '.join(cmd)}", flush=True)
    proc = run_child(cmd, run_dir / "log.txt", env)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    log = [json.loads(line) for line in (run_dir / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]
    # train_runtime_s is rounded to 0.1 s; samples / samples-per-second gives it unrounded
    samples = metrics["steps"] * args.batch_size if args.max_steps > 0 else None
    runtime = metrics["train_runtime_s"]
    if metrics.get("train_samples_per_second"):
        total = samples or len(pairs) * args.epochs
        runtime = total / metrics["train_samples_per_second"]
    return {
        **proc,
        "train_runtime_s": runtime,
        "losses": [r["loss"] for r in log],
        "steps": metrics["steps"],
        "trainer_samples_per_second": metrics.get("train_samples_per_second"),
    }


def run_child(cmd: list[str], log_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `cmd` to completion with its output in `log_path`; its wall time and peak RSS (its own, via wait4)."""
    with open(log_path, "w", encoding="utf-8") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keeps Popen from waiting again
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"{cmd[0]} failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}")
    return {"process_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}  # Linux reports KiB


# Report -------------------------------------------------------------------------------------------------------


def summarise(name: str, run: dict[str, Any], lengths: list[int], args) -> dict[str, Any]:
    n = len(lengths)
    steps = run["steps"]
    # Examples seen: every example once per epoch, or max_steps full batches (a smoke run stops inside the epoch).
    samples = min(steps * args.batch_size, n * args.epochs) if args.max_steps > 0 else n * args.epochs
    tokens = sum(lengths) / n * samples
    losses = run["losses"]
    tail = max(1, math.ceil(len(losses) / 10))
    return {
        "run": name,
        "steps": steps,
        "samples": samples,
        "train_runtime_s": run["train_runtime_s"],
        "samples_per_s": samples / run["train_runtime_s"],
        "trainer_samples_per_s": run["trainer_samples_per_second"],
        "tokens_per_s": tokens / run["train_runtime_s"],
        "final_loss": sum(losses[-tail:]) / tail,
        "mean_loss": sum(losses) / len(losses),
        "first_loss": losses[0],
        "process_s": run["process_s"],
        "peak_rss_mib": run["peak_rss_mib"],
    }


def versions() -> str:
    """Package versions of both venvs, read from their metadata (nothing imported)."""
    code = (
        "import importlib.metadata as m\n"
        "for p in ('torch', 'transformers', 'peft', 'trl', 'accelerate', 'datasets', 'llamafactory'):\n"
        "    try: print(f'{p} {m.version(p)}', end=', ')\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    out = []
    for name, python in (("hangjia", HANGJIA_PY), ("llamafactory", LF_VENV / "bin" / "python")):
        if python.is_file():
            found = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout
            out.append(f"{name} venv: {found.rstrip(', ')}")
    return "; ".join(out)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def render(rows, identity, args, pairs, base_dir, load_before: float) -> str:
    ref = next((r for r in rows if r["run"] == "llamafactory"), None)
    lines = [
        f"## train_vs_llamafactory — {date.today()}, {cpu_name()}, {os.cpu_count()} cores, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {load_before:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after (1 min)",
        "",
        versions(),
        "",
        f"{len(pairs)} examples, epochs {args.epochs}, max_steps {args.max_steps}, batch {args.batch_size}, "
        f"lr {args.learning_rate} cosine, warmup {args.warmup_ratio}, LoRA r{args.lora_r}/α{args.lora_alpha}/"
        f"dropout {args.lora_dropout} on {','.join(args.target_modules)}, max_length {args.max_length}, "
        f"seed {args.seed}, fp32; base {base_dir}",
    ]
    if identity:
        lines.append(
            f"tokenization: {identity['identical_input_ids_and_loss_mask']}/{identity['examples'][0]} examples "
            f"identical (input ids and loss mask; LLaMA-Factory has {identity['examples'][1]}); input tokens "
            f"{identity['input_tokens'][0]:,} vs {identity['input_tokens'][1]:,}, loss tokens "
            f"{identity['loss_tokens'][0]:,} vs {identity['loss_tokens'][1]:,} (hangjia vs llamafactory)"
        )
    lines += [
        "",
        "| run | steps | samples/s | tokens/s | train s | process s | final loss | mean loss | peak RSS MiB "
        "| speed vs LF | final loss vs LF |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = f"{r['samples_per_s'] / ref['samples_per_s']:.2f}×" if ref else "—"
        loss = f"{(r['final_loss'] - ref['final_loss']) / ref['final_loss'] * 100:+.2f}%" if ref else "—"
        lines.append(
            f"| {r['run']} | {r['steps']} | {r['samples_per_s']:.2f} | {r['tokens_per_s']:,.0f} | "
            f"{r['train_runtime_s']:.1f} | {r['process_s']:.1f} | {r['final_loss']:.4f} | {r['mean_loss']:.4f} | "
            f"{r['peak_rss_mib']:,.0f} | {speed} | {loss} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
