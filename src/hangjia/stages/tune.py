"""`hangjia tune`: hyper-parameter search over the SFT settings (not a stage other stages read)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.workspace import Workspace
from hangjia.stages.reporting import progress_bar
from hangjia.stages.train import selected_pairs


def tune(ws: Workspace, cfg: ProjectConfig, console: Console) -> dict[str, Any]:
    """Search learning rate, LoRA rank/alpha and epochs for the lowest validation loss (Optuna, median pruning).

    Trials, results.csv and best.yaml go to WORKSPACE/tune; a rerun continues the study there, keeping the trials
    that finished. Not a stage other stages read: paste best.yaml's train section into hangjia.yaml, then train."""
    from hangjia.llm.models import resolve_base
    from hangjia.train.hpo import SearchSpace, current_params
    from hangjia.train.hpo import tune as run_tune
    from hangjia.train.sft import sft_settings

    ws.require("select", "`hangjia select`")
    with console.status("preparing the base model"):
        base_dir = resolve_base(cfg.train.base_model, ws.root)
    train_pairs, val_pairs = selected_pairs(ws)
    t = cfg.tune
    space = SearchSpace(
        learning_rate=t.learning_rate, lora_r=t.lora_r, lora_alpha_ratio=t.lora_alpha_ratio, epochs=t.epochs
    )
    args = sft_settings(cfg.train)
    out_dir = ws.stage_dir("tune")
    with progress_bar(console) as progress:
        task = progress.add_task("tune", total=t.n_trials, status="")

        def on_step(trial: int, step: int, total: int) -> None:
            progress.update(task, status=f"trial {trial}: step {step}/{total}")

        def on_trial(row: dict[str, Any]) -> None:
            progress.advance(task)
            value = "" if row["value"] is None else f" val loss {row['value']:.4f}"
            console.print(
                f"trial {row['trial']} {row['state']}{value} (lr {row['learning_rate']:.2e}, r {row['lora_r']}, "
                f"alpha {row['lora_alpha']}, epochs {row['epochs']:g}, {row['steps']} steps)"
            )

        result = run_tune(
            base_dir,
            train_pairs,
            val_pairs,
            out_dir,
            args,
            space=space,
            n_trials=t.n_trials,
            seed=t.seed,
            timeout_s=t.timeout_s,
            prune_after_trials=t.prune_after_trials,
            prune_warmup_steps=t.prune_warmup_steps,
            enqueue=[current_params(args, space)] if t.baseline else [],
            base_model=cfg.train.base_model,
            on_trial=on_trial,
            on_step=on_step,
        )
    states = [row["state"] for row in result.rows]
    counts = {
        "trials": len(result.rows),
        "ran_now": result.ran,
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "best_trial": result.best_trial,
        "best_val_loss": result.best_value,
    }
    return {"stage": "tune", "skipped": result.ran == 0, "dir": str(out_dir), "counts": counts}
