"""The trainer arguments every Hangjia trainer shares, built in one place.

SFT (TRL's SFTConfig), continued pretraining (transformers' TrainingArguments), DPO (DPOConfig) and the reward
model (RewardConfig) all start from `trainer_arguments` and add or override what is theirs: SFT its checkpoints,
evaluations, bf16 and packing; DPO its beta; the reward model its reward centring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Schedule(Protocol):
    """The settings of a training section (train, pretrain, preference) that shape every run's optimisation."""

    epochs: float
    max_steps: int
    batch_size: int
    learning_rate: float
    warmup_ratio: float
    seed: int


def trainer_arguments(out_dir: Path, cfg: Schedule, *, evaluates: bool = True, **own: Any) -> dict[str, Any]:
    """Keyword arguments for TrainingArguments (or a TRL config, which extends it) from the section `cfg`, with the
    trainer's `own` arguments added or put in place of the shared ones.

    Shared: checkpoints (if any) in out_dir/checkpoints, none by default, and no evaluations during training; fp32;
    no gradient checkpointing (a 135M model on a CPU has small activations: recomputing them only costs time); a log
    record every step and no progress bar (the caller shows progress); the section's seed for weights and data
    order. `evaluates`: the trainer may evaluate, in batches of `cfg.batch_size`; False leaves transformers' eval
    batch as it is (continued pretraining measures held-out perplexity itself).
    """
    args: dict[str, Any] = dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the total steps
        activation_checkpointing=False,  # TRL defaults to on
        bf16=False,  # TRL defaults to on; CPU bf16 matmuls are slower than fp32 on x86 CPUs without AMX
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # pinning is for GPU transfers; on a CPU it only warns
    )
    if evaluates:
        args["per_device_eval_batch_size"] = cfg.batch_size
    return {**args, **own}
