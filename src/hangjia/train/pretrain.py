"""Continued pretraining (CPT) on raw domain text, with general-text replay against forgetting.

The standard causal-LM recipe: each document is tokenized and closed with EOS, the documents are
concatenated and cut into fixed-length blocks, and the loss is on every token. A block may span a
document boundary; the EOS between them is learnt like any other token, so the model learns where a
document ends. (Attention still crosses the boundary, see ARCHITECTURE.md "Known traps" on packing;
for pretraining that is the usual trade, as a block is a window on one stream, not a set of samples.)

Replay: general (non-domain) text is cut into blocks the same way and mixed in so that `replay_ratio`
of the training blocks are general text, a cheap guard against forgetting.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from hangjia.core.config import PretrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.eval.perplexity import perplexity
from hangjia.llm.models import load_tokenizer
from hangjia.train.arguments import trainer_arguments
from hangjia.train.sft import _StepLog

StepCallback = Callable[[int, int, dict[str, float]], None]


def tokenize_documents(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each non-empty document, each closed with EOS (the document boundary)."""
    texts = [t for t in texts if t.strip()]
    if not texts:  # the tokenizer fails on an empty batch
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [doc + [tokenizer.eos_token_id] for doc in ids]


def group_texts(docs: Sequence[Sequence[int]], block_size: int) -> list[list[int]]:
    """Concatenate the documents and cut the stream into `block_size` blocks; the short tail is dropped."""
    stream = [tok for doc in docs for tok in doc]
    end = len(stream) - len(stream) % block_size
    return [stream[i : i + block_size] for i in range(0, end, block_size)]


def mix_replay(
    domain: Sequence[list[int]], replay: Sequence[list[int]], ratio: float, seed: int
) -> tuple[list[list[int]], int]:
    """Domain blocks plus replay blocks making up `ratio` of the result, shuffled; returns (blocks, replay count).

    With fewer replay blocks than the ratio asks for, they are repeated: general text seen twice hurts
    less than a domain-only diet.
    """
    if not 0 <= ratio < 1:
        raise HangjiaError(f"replay_ratio must be at least 0 and below 1, got {ratio}.")
    rng = random.Random(seed)
    n_replay = round(ratio * len(domain) / (1 - ratio)) if replay else 0
    pool: list[list[int]] = []
    while len(pool) < n_replay:
        pool += rng.sample(list(replay), len(replay))
    blocks = list(domain) + pool[:n_replay]
    rng.shuffle(blocks)
    return blocks, n_replay


def split_holdout(texts: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) documents, kept whole; a single document gives up its tail instead."""
    texts = [t for t in texts if t.strip()]
    if fraction <= 0 or not texts:
        return texts, []
    if len(texts) == 1:
        at = int(len(texts[0]) * (1 - fraction))
        space = texts[0].find(" ", at)  # cut between words where there are spaces (CJK text has none)
        cut = at if space == -1 else space
        return [texts[0][:cut]], [texts[0][cut:]]
    order = random.Random(seed).sample(range(len(texts)), len(texts))
    held = set(order[: max(1, round(fraction * len(texts)))])
    return [t for i, t in enumerate(texts) if i not in held], [t for i, t in enumerate(texts) if i in held]


@dataclass
class CPTData:
    train_blocks: list[list[int]]
    """Domain and replay blocks, shuffled together."""
    val_texts: list[str]
    """Held-out domain documents, for perplexity."""
    domain_blocks: int
    """Training blocks of domain text."""
    replay_blocks: int
    """Training blocks of general text."""


def prepare_blocks(
    tokenizer: PreTrainedTokenizerBase,
    domain_texts: Sequence[str],
    replay_texts: Sequence[str],
    args: PretrainConfig,
) -> CPTData:
    train_texts, val_texts = split_holdout(domain_texts, args.val_fraction, args.seed)
    train_docs = tokenize_documents(tokenizer, train_texts)
    domain = group_texts(train_docs, args.block_size)
    if not domain:
        n_tokens = sum(len(d) for d in train_docs)
        raise HangjiaError(
            f"The domain text gives {n_tokens} training tokens, less than one block of {args.block_size}: "
            "add documents or lower the block size."
        )
    replay = group_texts(tokenize_documents(tokenizer, replay_texts), args.block_size)
    blocks, n_replay = mix_replay(domain, replay, args.replay_ratio, args.seed)
    return CPTData(blocks, val_texts, len(domain), n_replay)


def held_out_perplexity(model, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], args: PretrainConfig) -> float:
    """Perplexity on held-out documents, in windows of one block that overlap by half a block."""
    if not texts:
        return math.nan
    stride = max(1, args.block_size // 2)
    return perplexity(model, tokenizer, texts, max_length=args.block_size, stride=stride, batch_size=args.batch_size)


def build_cpt_trainer(
    base_dir: Path, data: CPTData, out_dir: Path, args: PretrainConfig, callbacks: list[TrainerCallback] | None = None
) -> Trainer:
    """A causal-LM Trainer over the blocks: a fresh LoRA adapter, or every weight when `args.full`."""
    torch.manual_seed(args.seed)
    datasets.disable_progress_bars()
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if not args.full:
        lora = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    # Labels are the inputs (the model shifts them). Not DataCollatorForLanguageModeling: it masks pad tokens,
    # and the pad token is often EOS, the document boundary the model should learn.
    train_ds = Dataset.from_dict({"input_ids": data.train_blocks, "labels": data.train_blocks})
    config = TrainingArguments(**trainer_arguments(out_dir, args, evaluates=False))
    trainer = Trainer(
        model=model,
        args=config,
        train_dataset=train_ds,
        data_collator=default_data_collator,  # every block has the same length: no padding
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def train_cpt(
    base_dir: Path,
    domain_texts: Sequence[str],
    out_dir: Path,
    args: PretrainConfig,
    replay_texts: Sequence[str] = (),
    on_step: StepCallback | None = None,
) -> dict[str, Any]:
    """Continued pretraining into `out_dir/adapter` (or `out_dir/model` when full); steps in trainer_log.jsonl.

    `replay_texts` (general text) make up `args.replay_ratio` of the training blocks; `args.base_model` is the
    caller's business (`base_dir` is the model's folder).

    Returns metrics, including held-out domain perplexity before and after (the honest "did it learn").
    """
    log_path = out_dir / "trainer_log.jsonl"
    tokenizer = load_tokenizer(base_dir)
    data = prepare_blocks(tokenizer, domain_texts, replay_texts, args)
    trainer = build_cpt_trainer(base_dir, data, out_dir, args, [_StepLog(log_path, on_step)])
    ppl_before = held_out_perplexity(trainer.model, tokenizer, data.val_texts, args)
    result = trainer.train()
    ppl_after = held_out_perplexity(trainer.model, tokenizer, data.val_texts, args)
    saved = out_dir / ("model" if args.full else "adapter")
    trainer.model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    losses = [json.loads(line)["loss"] for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    return {
        "steps": result.global_step,
        "full": args.full,
        "output": saved.name,
        "block_size": args.block_size,
        "domain_blocks": data.domain_blocks,
        "replay_blocks": data.replay_blocks,
        "train_tokens": len(data.train_blocks) * args.block_size,
        "val_documents": len(data.val_texts),
        "first_train_loss": losses[0] if losses else math.nan,
        "final_train_loss": losses[-1] if losses else math.nan,
        "val_perplexity_before": ppl_before,
        "val_perplexity_after": ppl_after,
        "train_runtime_s": round(result.metrics.get("train_runtime", math.nan), 1),
    }
