"""Preference training: DPO on the policy, and a pairwise reward model, both LoRA through TRL.

A preference is `(question, chosen, rejected)`. Both trainers see it in TRL's conversational
prompt/chosen/rejected format with the project's system prompt (`prompts.question_messages`), so the
tokens trained on are the tokens the server later sends.

DPO usually starts from the SFT adapter ("SFT then DPO"). TRL 1.16 then copies that adapter into a
frozen "ref" adapter and measures the policy against it, so the reference is the SFT model, not the
bare base; with a fresh adapter the reference is the base model (adapter disabled).

The settings are the `preference:` section's (PreferenceConfig); a fresh adapter takes its shape (lora_r, lora_alpha,
target_modules) from the `train:` section (TrainConfig), passed as `lora`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from peft import LoraConfig, PeftConfig, PeftModel
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    PreTrainedTokenizerBase,
    PrinterCallback,
    TrainerCallback,
)
from transformers.utils import logging as transformers_logging
from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

from hangjia.core.config import PreferenceConfig, TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import question_messages
from hangjia.llm.models import load_tokenizer
from hangjia.train.arguments import trainer_arguments
from hangjia.train.sft import _StepLog

Preference = tuple[str, str, str]
"""(question, chosen answer, rejected answer)."""

StepCallback = Callable[[int, int, dict[str, float]], None]


def to_preference(question: str, chosen: str, rejected: str) -> dict[str, list[dict[str, str]]]:
    return {
        "prompt": question_messages(question),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def build_dpo_trainer(
    base_dir: Path,
    pairs: Sequence[Preference],
    out_dir: Path,
    args: PreferenceConfig,
    lora: TrainConfig,
    adapter: Path | None = None,
    val_pairs: Sequence[Preference] = (),
    callbacks: list[TrainerCallback] | None = None,
) -> DPOTrainer:
    """A DPOTrainer on a fresh LoRA adapter, or on the SFT adapter in `adapter` (trainable, reference = its copy)."""
    torch.manual_seed(args.seed)
    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_config = None
    if adapter is not None:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise HangjiaError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json): train SFT first.")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        peft_config = LoraConfig(
            r=lora.lora_r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=0.0,  # TRL turns every dropout off here (disable_dropout)
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
    config = DPOConfig(**trainer_arguments(out_dir, args, max_length=args.max_length, beta=args.beta))
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list([to_preference(*p) for p in pairs]),
        eval_dataset=Dataset.from_list([to_preference(*p) for p in val_pairs]) if val_pairs else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_dpo(
    base_dir: Path,
    pairs: Sequence[Preference],
    out_dir: Path,
    args: PreferenceConfig,
    lora: TrainConfig,
    adapter: Path | None = None,
    on_step: StepCallback | None = None,
    val_pairs: Sequence[Preference] = (),
) -> dict[str, Any]:
    """DPO into `out_dir/adapter` (from the SFT adapter when given); every step logged to `out_dir/trainer_log.jsonl`.

    Returns metrics: TRL's reward accuracy and margin (implicit rewards β·log π/π_ref) on the first and last
    logged step, and on `val_pairs` after training when given.
    """
    log_path = out_dir / "trainer_log.jsonl"
    callbacks = [_StepLog(log_path, on_step)]
    trainer = build_dpo_trainer(base_dir, pairs, out_dir, args, lora, adapter, val_pairs, callbacks)
    result = trainer.train()
    # Only the policy adapter; TRL's frozen "ref" copy of an SFT adapter is not part of the result.
    trainer.model.save_pretrained(out_dir / "adapter", selected_adapters=["default"])
    trainer.processing_class.save_pretrained(out_dir / "adapter")
    log = _read_log(log_path)
    metrics = {
        "steps": result.global_step,
        "pairs": len(pairs),
        "val_pairs": len(val_pairs),
        "beta": args.beta,
        "from_adapter": str(adapter) if adapter is not None else None,
        **_first_last(log, "loss", "loss"),
        **_first_last(log, "rewards/accuracies", "reward_accuracy"),
        **_first_last(log, "rewards/margins", "reward_margin"),
        "train_runtime_s": round(result.metrics.get("train_runtime", math.nan), 1),
    }
    if val_pairs:
        ev = trainer.evaluate()
        metrics["val_reward_accuracy"] = ev.get("eval_rewards/accuracies", math.nan)
        metrics["val_reward_margin"] = ev.get("eval_rewards/margins", math.nan)
    return metrics


def build_reward_trainer(
    base_dir: Path,
    pairs: Sequence[Preference],
    out_dir: Path,
    args: PreferenceConfig,
    lora: TrainConfig,
    val_pairs: Sequence[Preference] = (),
    callbacks: list[TrainerCallback] | None = None,
) -> RewardTrainer:
    """A RewardTrainer on the base model with a fresh scalar head (num_labels=1), LoRA on the body."""
    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(base_dir)
    peft_config = LoraConfig(
        r=lora.lora_r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=0.0,  # TRL turns every dropout off here (disable_dropout)
        target_modules=list(lora.target_modules),
        modules_to_save=["score"],  # the head is new: train it in full and save it with the adapter
        task_type="SEQ_CLS",
    )
    own = {"max_length": args.max_length, "center_rewards_coefficient": args.center_rewards}
    config = RewardConfig(**trainer_arguments(out_dir, args, **own))
    trainer = RewardTrainer(
        # From the path, TRL loads it with num_labels=1, seeded, and without the "score.weight missing" report.
        model=str(base_dir),
        args=config,
        train_dataset=Dataset.from_list([to_preference(*p) for p in pairs]),
        eval_dataset=Dataset.from_list([to_preference(*p) for p in val_pairs]) if val_pairs else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_reward_model(
    base_dir: Path,
    pairs: Sequence[Preference],
    out_dir: Path,
    args: PreferenceConfig,
    lora: TrainConfig,
    on_step: StepCallback | None = None,
    val_pairs: Sequence[Preference] = (),
) -> dict[str, Any]:
    """Pairwise (Bradley-Terry) reward model into `out_dir/reward_model`; score answers with `score()`.

    The saved folder is a PEFT adapter (LoRA + score head) whose config names the base model's folder.
    Returns metrics with TRL's batch accuracy and margin, and the held-out accuracy before/after when
    `val_pairs` are given.
    """
    log_path = out_dir / "trainer_log.jsonl"
    trainer = build_reward_trainer(base_dir, pairs, out_dir, args, lora, val_pairs, [_StepLog(log_path, on_step)])
    val_before = trainer.evaluate() if val_pairs else {}
    result = trainer.train()
    val_after = trainer.evaluate() if val_pairs else {}
    trainer.model.save_pretrained(out_dir / "reward_model")
    trainer.processing_class.save_pretrained(out_dir / "reward_model")
    log = _read_log(log_path)
    metrics = {
        "steps": result.global_step,
        "pairs": len(pairs),
        "val_pairs": len(val_pairs),
        **_first_last(log, "loss", "loss"),
        **_first_last(log, "accuracy", "accuracy"),
        **_first_last(log, "margin", "margin"),
        "train_runtime_s": round(result.metrics.get("train_runtime", math.nan), 1),
    }
    if val_pairs:
        metrics["val_accuracy_before"] = val_before.get("eval_accuracy", math.nan)
        metrics["val_accuracy_after"] = val_after.get("eval_accuracy", math.nan)
    return metrics


def load_reward_model(model_dir: Path) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A reward model saved by `train_reward_model` (adapter + head), or any sequence-classification folder."""
    model_dir = Path(model_dir)
    if (model_dir / "adapter_config.json").is_file():
        base = Path(PeftConfig.from_pretrained(model_dir).base_model_name_or_path)
        if not base.is_dir():
            raise HangjiaError(
                f"The reward model {model_dir} was trained on the base model {base}, which is no longer there: "
                "put the base model back or train the reward model again."
            )
        with _quiet_load_report():  # the base has no score head; the adapter brings the trained one
            model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(model_dir)
    # The head reads the last non-pad token; training set this from the tokenizer, so must scoring.
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def score(model_dir: Path, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 16) -> list[float]:
    """The reward of each answer to its question, formatted exactly as in training."""
    model, tokenizer = load_reward_model(model_dir)
    return rewards(model, tokenizer, prompts, answers, batch_size)


@torch.no_grad()
def rewards(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
) -> list[float]:
    """`score` with a model already loaded by `load_reward_model` (for repeated scoring)."""
    if len(prompts) != len(answers):
        raise HangjiaError(f"Got {len(prompts)} prompts but {len(answers)} answers: give one answer per prompt.")
    out: list[float] = []
    for start in range(0, len(prompts), batch_size):
        ids = [
            tokenizer.apply_chat_template(
                question_messages(q) + [{"role": "assistant", "content": a}], tokenize=True, return_dict=True
            )["input_ids"]
            for q, a in zip(prompts[start : start + batch_size], answers[start : start + batch_size], strict=True)
        ]
        # Right padding: the head takes the logit at the last non-pad token of each row.
        batch = tokenizer.pad({"input_ids": ids}, padding_side="right", return_tensors="pt")
        out += model(**batch).logits.squeeze(-1).tolist()
    return out


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    level = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)


def _read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _first_last(log: list[dict[str, Any]], key: str, name: str) -> dict[str, float]:
    values = [r[key] for r in log if key in r]
    return {f"first_{name}": values[0] if values else math.nan, f"final_{name}": values[-1] if values else math.nan}
