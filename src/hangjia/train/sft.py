"""LoRA supervised fine-tuning with TRL's SFTTrainer, loss on the answer tokens only.

Examples use TRL's conversational prompt/completion format: the prompt (system + question) is
masked out of the loss and only the assistant completion is learned. SmolLM2's chat template
has no `{% generation %}` markers, so `assistant_only_loss` is not an option; this format is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

from hangjia.models import load_tokenizer
from hangjia.prompts import question_messages


@dataclass
class LoraSFTArgs:
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: list[str]
    learning_rate: float
    epochs: float
    max_steps: int
    batch_size: int
    warmup_ratio: float
    max_length: int
    seed: int


def to_example(question: str, answer: str) -> dict[str, list[dict[str, str]]]:
    return {"prompt": question_messages(question), "completion": [{"role": "assistant", "content": answer}]}


def build_trainer(
    base_dir: Path,
    train_pairs: list[tuple[str, str]],
    val_pairs: list[tuple[str, str]],
    out_dir: Path,
    args: LoraSFTArgs,
    callbacks: list[TrainerCallback] | None = None,
) -> SFTTrainer:
    """An SFTTrainer with a fresh LoRA adapter on the base model, ready to `train()`."""
    torch.manual_seed(args.seed)
    datasets.disable_progress_bars()  # four bars per split, each done in milliseconds; ours shows the steps
    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    train_ds = Dataset.from_list([to_example(q, a) for q, a in train_pairs])
    val_ds = Dataset.from_list([to_example(q, a) for q, a in val_pairs]) if val_pairs else None
    config = SFTConfig(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_ratio,
        max_length=args.max_length,
        completion_only_loss=True,
        gradient_checkpointing=False,  # 135M params on CPU: activations are small, recompute only costs time
        bf16=False,  # CPU bf16 matmuls are slower than fp32 on most x86 CPUs without AMX
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,  # pinning is for GPU transfers; on CPU it only warns
    )
    peft_config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.target_modules,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the caller shows progress instead
    return trainer


def train_lora_sft(
    base_dir: Path,
    train_pairs: list[tuple[str, str]],
    val_pairs: list[tuple[str, str]],
    out_dir: Path,
    args: LoraSFTArgs,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter into `out_dir/adapter`; log every step to `out_dir/trainer_log.jsonl`.

    Returns metrics, including validation loss before and after training (the honest "did it learn").
    """
    log_path = out_dir / "trainer_log.jsonl"
    trainer = build_trainer(base_dir, train_pairs, val_pairs, out_dir, args, [_StepLog(log_path, on_step)])
    tokenizer = trainer.processing_class
    val_before = _val_loss(trainer)
    result = trainer.train()
    val_after = _val_loss(trainer)
    trainer.model.save_pretrained(out_dir / "adapter")
    tokenizer.save_pretrained(out_dir / "adapter")
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines() if '"loss"' in line]
    return {
        "steps": result.global_step,
        "train_examples": len(train_pairs),
        "val_examples": len(val_pairs),
        "first_train_loss": losses[0] if losses else math.nan,
        "final_train_loss": losses[-1] if losses else math.nan,
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "train_runtime_s": round(result.metrics.get("train_runtime", math.nan), 1),
        "train_samples_per_second": result.metrics.get("train_samples_per_second", math.nan),
    }


def _val_loss(trainer: SFTTrainer) -> float:
    # TRL drops examples whose completion was truncated away; an emptied eval set has no loss.
    if trainer.eval_dataset is None or len(trainer.eval_dataset) == 0:
        return math.nan
    return trainer.evaluate().get("eval_loss", math.nan)


class _StepLog(TrainerCallback):
    """Writes each logged step to trainer_log.jsonl and reports progress to the caller."""

    def __init__(self, path: Path, on_step: Callable[[int, int, dict[str, float]], None] | None):
        self.path = path
        self.on_step = on_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 3), **logs}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.on_step is not None:
            self.on_step(state.global_step, state.max_steps, logs)
