"""`hangjia train`: supervised fine-tuning of the base model on the selected pairs, plus the feedback that reviewers
accepted (`hangjia feedback export` wrote it as the dataset feedback_sft), each of its rows seen
train.feedback_repeats times an epoch.

`hangjia retrain` runs this stage incrementally: it starts from the adapter in service instead of a fresh one and
trains it on the feedback plus a replayed sample of the selected pairs (retrain.replay), so the model keeps what it
knew (app/retrain.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.jsonl import read_jsonl
from hangjia.core.workspace import Workspace, sha256_file, sha256_tree
from hangjia.llm.models import PRETRAINED_BASE
from hangjia.stages.reporting import done, progress_bar, skipped

FEEDBACK_SFT = "feedback_sft"  # the dataset `hangjia feedback export` writes (app/review.py)
LATEST = "latest"
_ESTIMATE_AFTER = 5  # steps measured before the time left is printed (the first ones carry warm-up costs too)


def train(
    ws: Workspace,
    cfg: ProjectConfig,
    console: Console,
    force: bool = False,
    resume: bool = False,
    *,
    feedback: str | None = LATEST,
    start_from: Path | None = None,
) -> dict[str, Any]:
    """LoRA SFT of the base model on the selected pairs and the accepted feedback (loss on answers only).

    `feedback`: the feedback_sft version to learn (LATEST: the newest, if any; None: none). `start_from`: train this
    adapter further on the feedback and retrain.replay of the selected pairs, instead of a fresh adapter on all.
    With train.save_steps, checkpoints stay in the staging folder when a run dies (even by kill -9), and
    `resume` continues from the newest one, provided the inputs and config are those of the run that died."""
    import time

    from hangjia.llm.models import resolve_base
    from hangjia.train.distributed import run_distributed
    from hangjia.train.sft import sft_settings

    upstream = ws.require("select", "`hangjia select`")
    inputs = {"select": upstream["fingerprint"]}
    if cfg.train.accelerate_config is not None and Path(cfg.train.accelerate_config).is_file():
        inputs["accelerate_config"] = sha256_file(Path(cfg.train.accelerate_config))
    config = cfg.train.model_dump(mode="json")
    feedback_ref, feedback_pairs = feedback_examples(ws, feedback)
    if feedback_ref is not None:
        inputs["feedback_sft"] = feedback_ref
        config["feedback_repeats"] = cfg.retrain.feedback_repeats
    if start_from is not None:
        inputs["start_from"] = sha256_tree(start_from)
        config["replay"] = cfg.retrain.replay
    if cfg.train.base_model == PRETRAINED_BASE:
        inputs["pretrain"] = ws.require("pretrain", "`hangjia pretrain`")["fingerprint"]
    if not force and not resume and ws.is_current("train", inputs, config):
        return skipped("train", ws)
    with console.status("preparing the base model"):
        base_dir = resolve_base(cfg.train.base_model, ws.root)
    train_pairs, val_pairs = selected_pairs(ws)
    if start_from is not None:
        train_pairs = random.Random(cfg.train.seed).sample(train_pairs, min(cfg.retrain.replay, len(train_pairs)))
    train_pairs += feedback_pairs * cfg.retrain.feedback_repeats
    learned = f" ({len(feedback_pairs)} from feedback × {cfg.retrain.feedback_repeats})" if feedback_pairs else ""
    console.print(
        f"train: {len(train_pairs)} examples{learned}, {cfg.train.epochs:g} epoch(s) of batch "
        f"{cfg.train.batch_size}{' from the adapter in service' if start_from else ''}; "
        f"the time left is printed after {_ESTIMATE_AFTER} steps"
    )
    keep = cfg.train.save_steps > 0
    with ws.stage("train", inputs, config, keep_partial=keep, resume=resume) as run, progress_bar(console) as progress:
        task = progress.add_task("train", total=None, status="")
        started, first = time.time(), None

        def on_step(step: int, total: int, logs: dict[str, float]) -> None:
            nonlocal first
            first = step - 1 if first is None else first  # a resumed run starts past 0
            rate = (step - first) * cfg.train.batch_size / max(time.time() - started, 1e-9)
            status = f"loss {logs['loss']:.3f}  lr {logs.get('learning_rate', 0):.2e}  {rate:.2f} samples/s"
            progress.update(task, completed=step, total=total, status=status)
            if step - first == _ESTIMATE_AFTER and total > step:
                left = (time.time() - started) / (step - first) * (total - step)
                progress.console.print(f"train: {total} steps, about {left / 60:.0f} min left at this pace")

        metrics = run_distributed(
            cfg.train.nproc,
            base_dir,
            train_pairs,
            val_pairs,
            run.dir,
            sft_settings(cfg.train),
            on_step=on_step,
            accelerate_config=cfg.train.accelerate_config,
            resume=resume,
            start_from=start_from,
        )
        metrics["feedback_examples"] = len(feedback_pairs)
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics)
    return done("train", ws)


def feedback_examples(ws: Workspace, ref: str | None = LATEST) -> tuple[str | None, list[tuple[str, str]]]:
    """(ref, (prompt, answer) pairs) of a feedback_sft version: `ref`, or the newest with LATEST; (None, []) when
    there is none."""
    from hangjia.corpus.datasets import DatasetStore

    store = DatasetStore(ws.root / "datasets")
    if ref is None or (ref == LATEST and not store.versions(FEEDBACK_SFT)):
        return None, []
    version = store.resolve(FEEDBACK_SFT if ref == LATEST else ref)
    rows = version.read(columns=["instruction", "output"]).to_pylist()
    return version.ref, [(r["instruction"], r["output"]) for r in rows]


def selected_pairs(ws: Workspace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(user turn, answer) pairs of the select stage's train and val splits."""
    src = ws.stage_dir("select")
    return tuple(
        [(r.get("prompt") or r["question"], r["answer"]) for r in read_jsonl(src / f"{split}.jsonl")]
        for split in ("train", "val")
    )
