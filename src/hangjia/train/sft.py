"""LoRA supervised fine-tuning with TRL's SFTTrainer, loss on the answer tokens only.

Examples use TRL's conversational prompt/completion format: the prompt (system + question) is
masked out of the loss and only the assistant completion is learned. SmolLM2's chat template
has no `{% generation %}` markers, so `assistant_only_loss` is not an option; this format is.

Everything goes through SFTTrainer's public arguments and callbacks: packing is a data collator
(TRL's own packing stays off), checkpoints and resume are the Trainer's, early stopping is
transformers' EarlyStoppingCallback.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from peft import LoraConfig, PeftConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig
from transformers import AutoModelForCausalLM, EarlyStoppingCallback, PrinterCallback, TrainerCallback
from transformers.utils import is_torch_bf16_available_on_device
from trl import SFTConfig, SFTTrainer

from hangjia.core.config import TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import question_messages
from hangjia.llm.models import load_tokenizer
from hangjia.train.arguments import trainer_arguments
from hangjia.train.packing import PackingCollator

logger = logging.getLogger(__name__)
METHODS = ("lora", "full", "prefix", "ptuning")
VIRTUAL_TOKENS = ("prefix", "ptuning")
"""Methods that prepend virtual tokens, which the packing mask does not cover: they always train unpacked."""


def sft_settings(cfg: TrainConfig) -> TrainConfig:
    """The train section as SFT runs it: packing off for prefix and ptuning, as train.packing says.

    build_trainer refuses packing with those methods; the stages, `hangjia tune` and the benchmarks pass their
    train section through here first."""
    if cfg.packing and cfg.method in VIRTUAL_TOKENS:
        return cfg.model_copy(update={"packing": False})
    return cfg


def to_example(question: str, answer: str) -> dict[str, list[dict[str, str]]]:
    return {"prompt": question_messages(question), "completion": [{"role": "assistant", "content": answer}]}


def build_trainer(
    base_dir: Path,
    train_pairs: list[tuple[str, str]],
    val_pairs: list[tuple[str, str]],
    out_dir: Path,
    args: TrainConfig,
    callbacks: list[TrainerCallback] | None = None,
    start_from: Path | None = None,
) -> SFTTrainer:
    """An SFTTrainer with a fresh adapter (train.method) on the base model, ready to `train()`; with `start_from` (a
    PEFT adapter folder), that adapter trained further instead (`hangjia retrain`: the model in service learns the
    feedback), its own shape kept.

    The launch settings of `args` (base_model, nproc, accelerate_config) are the caller's business."""
    _check(args, val_pairs)
    torch.manual_seed(args.seed)
    datasets.disable_progress_bars()  # four bars per split, each done in milliseconds; ours shows the steps
    tokenizer = load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_config = _peft_config(args, model.config.hidden_size)
    if start_from is not None:
        if not (Path(start_from) / "adapter_config.json").is_file():
            raise HangjiaError(f"{start_from} is not a PEFT adapter folder (no adapter_config.json) to continue.")
        model, peft_config = PeftModel.from_pretrained(model, start_from, is_trainable=True), None
    train_ds = Dataset.from_list([to_example(q, a) for q, a in train_pairs])
    val_ds = Dataset.from_list([to_example(q, a) for q, a in val_pairs]) if val_pairs else None
    bf16, on_cpu = _bf16(args.bf16)
    early_stopping = args.early_stopping_patience > 0
    # Early stopping restores the best checkpoint at the end, so it needs one at every evaluation at least.
    save_steps = args.save_steps or (args.eval_steps if early_stopping else 0)
    config = SFTConfig(
        **trainer_arguments(
            out_dir,
            args,
            max_length=args.max_length,
            completion_only_loss=True,
            packing=False,  # ours packs per batch with an isolating mask; TRL's relies on position_ids alone
            # transformers 5 renamed it; the new name also silences TRL's default of the old one (True).
            activation_checkpointing=args.gradient_checkpointing,
            bf16=bf16,
            use_cpu=on_cpu,  # transformers refuses bf16 without a GPU unless told the CPU is meant
            save_strategy="steps" if save_steps else "no",
            save_steps=save_steps or 500,
            save_total_limit=2,  # the latest (to resume) and, with early stopping, the best: a few MB each
            eval_strategy="steps" if args.eval_steps else "no",
            eval_steps=args.eval_steps or None,
            load_best_model_at_end=early_stopping,
            metric_for_best_model="eval_loss" if early_stopping else None,
            greater_is_better=False if early_stopping else None,
            restore_callback_states_from_checkpoint=True,  # early stopping's patience count survives a resume
        )
    )
    collator = None
    if args.packing:
        # The model stays fp32 (bf16 is autocast), so an fp32 additive mask suits both sdpa and eager.
        collator = PackingCollator(tokenizer.pad_token_id, args.max_length, share_prefix=args.share_prefix)
    callbacks = list(callbacks or [])
    if early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    trainer = AnswerLossSFTTrainer(
        model=model,
        args=config,
        data_collator=collator,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; the caller shows progress instead
    return trainer


class AnswerLossSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer, with a loss that projects only the answer positions onto the vocabulary.

    The loss is on the answer tokens alone (~1 in 8 positions on the sample domain), yet TRL's fused head scores
    every position on CPU (it keeps only labelled positions on Triton devices). Here the backbone runs as usual and
    the LM head (576 x 49,152 for SmolLM2: a fifth of the model's work per position) and the log-softmax run on
    the labelled positions only. The loss is TRL's: summed negative log-likelihood over `num_items_in_batch` (or
    the labelled count). Used on one process with LoRA or full fine-tuning; DDP (whose forward must wrap the
    call), virtual-token methods and `return_outputs` take TRL's path unchanged.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inner = self.accelerator.unwrap_model(model)
        prompt_learning = getattr(getattr(inner, "active_peft_config", None), "is_prompt_learning", False)
        if return_outputs or inner is not model or prompt_learning or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        causal_lm = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
        features = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch")}
        targets = inputs["labels"][:, 1:]
        mask = targets != -100
        # accelerate applies mixed precision by wrapping the model's forward, which this path goes around.
        with self.accelerator.autocast():
            hidden = causal_lm.get_decoder()(**features, use_cache=False).last_hidden_state[:, :-1]
            logits = causal_lm.get_output_embeddings()(hidden[mask]).float()
        total = torch.nn.functional.cross_entropy(logits, targets[mask], reduction="sum")
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        return total / torch.as_tensor(count).clamp(min=1)


def train_lora_sft(
    base_dir: Path,
    train_pairs: list[tuple[str, str]],
    val_pairs: list[tuple[str, str]],
    out_dir: Path,
    args: TrainConfig,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    *,
    resume: bool = False,
    start_from: Path | None = None,
) -> dict[str, Any]:
    """Train an adapter into `out_dir/adapter` (with method full: the whole model into `out_dir/model`); log every
    step to `out_dir/trainer_log.jsonl`. `resume`: continue from the newest complete checkpoint in
    `out_dir/checkpoints` (a fresh start when there is none). `start_from`: an adapter to train further instead of a
    fresh one.

    Validation losses measured during training go to `out_dir/eval_log.jsonl`. Returns metrics, including
    validation loss before and after training (the honest "did it learn").
    """
    log = _StepLog(out_dir / "trainer_log.jsonl", on_step, out_dir / "eval_log.jsonl", packing=args.packing)
    trainer = build_trainer(base_dir, train_pairs, val_pairs, out_dir, args, [log], start_from)
    tokenizer = trainer.processing_class
    checkpoint = latest_checkpoint(out_dir / "checkpoints") if resume else None
    log.restart(_step_of(checkpoint) if checkpoint else 0)
    # Measured inside train(), once the Trainer has wrapped the model: evaluating first marks the bare model as
    # prepared (accelerate 1.15), so train() would skip the DDP wrap and each process would train alone;
    # DeepSpeed ZeRO-1/2 also refuses to evaluate before its engine exists.
    trainer.args.eval_on_start = _has_val(trainer)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    # The first evaluation on record: this run's, or on resume the one the first run made (the state is restored).
    val_before = next((r["eval_loss"] for r in trainer.state.log_history if "eval_loss" in r), math.nan)
    val_after = _val_loss(trainer)  # with early stopping: of the best adapter, which is now loaded
    saved = out_dir / ("model" if args.method == "full" else "adapter")
    trainer.model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    losses = [json.loads(line)["loss"] for line in log.path.read_text().splitlines() if '"loss"' in line]
    state = trainer.state
    return {
        "steps": result.global_step,
        "train_examples": len(train_pairs),
        "val_examples": len(val_pairs),
        "first_train_loss": losses[0] if losses else math.nan,
        "final_train_loss": losses[-1] if losses else math.nan,
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "resumed_from_step": _step_of(checkpoint) if checkpoint else 0,
        "stopped_early": args.early_stopping_patience > 0 and state.global_step < state.max_steps,
        "best_step": state.best_global_step or result.global_step,
        "train_runtime_s": round(result.metrics.get("train_runtime", math.nan), 1),
        "train_samples_per_second": result.metrics.get("train_samples_per_second", math.nan),
    }


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `folder`, deleting any newer one a crash left half-written.

    The Trainer writes a checkpoint in place, trainer_state.json last, so a kill mid-save leaves a folder
    without it; `transformers.trainer_utils.get_last_checkpoint` would pick that folder and fail to resume.
    """
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and _step_of(p) >= 0), key=_step_of)
    for path in reversed(found):
        if (path / "trainer_state.json").is_file():
            return path
        shutil.rmtree(path)
    return None


def _step_of(checkpoint: Path) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", checkpoint.name)
    return int(match.group(1)) if match else -1


def _peft_config(args: TrainConfig, hidden_size: int) -> PeftConfig | None:
    if args.method == "full":
        return None
    if args.method == "lora":
        return LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.target_modules,
            task_type="CAUSAL_LM",
        )
    if args.method == "prefix":
        return PrefixTuningConfig(num_virtual_tokens=args.num_virtual_tokens, task_type="CAUSAL_LM")
    return PromptEncoderConfig(
        num_virtual_tokens=args.num_virtual_tokens, encoder_hidden_size=hidden_size, task_type="CAUSAL_LM"
    )


def _check(args: TrainConfig, val_pairs: list[tuple[str, str]]) -> None:
    if args.method not in METHODS:
        raise HangjiaError(f"Unknown train.method '{args.method}'; use one of {', '.join(METHODS)}.")
    if args.packing and args.method in VIRTUAL_TOKENS:
        raise HangjiaError(
            f"train.packing needs train.method lora or full: {args.method} adds virtual tokens the packing mask "
            "does not cover. Turn packing off or use lora."
        )
    if args.early_stopping_patience > 0:
        if args.eval_steps <= 0 or not val_pairs:
            raise HangjiaError(
                "Early stopping watches the validation loss: set train.eval_steps > 0 and keep a validation split, "
                "or set train.early_stopping_patience to 0."
            )
        if args.save_steps and args.save_steps % args.eval_steps:
            raise HangjiaError(
                f"With early stopping, train.save_steps ({args.save_steps}) must be a multiple of train.eval_steps "
                f"({args.eval_steps}) so the best evaluation has a checkpoint to return to."
            )


def _bf16(wanted: bool) -> tuple[bool, bool]:
    """(use bf16, tell transformers the CPU is meant): bf16 only where torch can do bf16 matmuls on the device."""
    if not wanted:
        return False, False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not is_torch_bf16_available_on_device(device):
        logger.warning("bf16 was asked for but torch reports no bf16 support on %s; training in fp32.", device)
        return False, False
    return True, device == "cpu"


def _has_val(trainer: SFTTrainer) -> bool:
    # TRL drops examples whose completion was truncated away; an emptied eval set has no loss.
    return trainer.eval_dataset is not None and len(trainer.eval_dataset) > 0


def _val_loss(trainer: SFTTrainer) -> float:
    return trainer.evaluate().get("eval_loss", math.nan) if _has_val(trainer) else math.nan


class _StepLog(TrainerCallback):
    """Writes each training step to trainer_log.jsonl (evaluations during training to eval_log.jsonl) and
    reports progress to the caller. On resume the logs are cut back to the checkpoint, so no step repeats."""

    def __init__(
        self,
        path: Path,
        on_step: Callable[[int, int, dict[str, float]], None] | None,
        eval_path: Path | None = None,
        packing: bool = False,
    ):
        self.path = path
        self.on_step = on_step
        self.eval_path = eval_path
        # TRL counts tokens as attention_mask.sum(); a packed batch's mask is 4-D and additive, so that is no count.
        self.drop = {"num_tokens", "eval_num_tokens"} if packing else set()
        self.training = False

    def restart(self, step: int) -> None:
        """Keep only the records of steps up to `step` (0: start both logs afresh)."""
        for path in (self.path, self.eval_path):
            if path is None or not path.is_file():
                continue
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if _step_in(line) <= step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 3)}
        record.update((k, v) for k, v in logs.items() if k not in self.drop)
        if "loss" in logs:
            _append(self.path, record)
            if self.on_step is not None:
                self.on_step(state.global_step, state.max_steps, logs)
        elif "eval_loss" in logs and self.training and self.eval_path is not None:
            _append(self.eval_path, record)


def _step_in(line: str) -> float:
    """The step of a log line; a line a kill cut short counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError):
        return math.inf


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
