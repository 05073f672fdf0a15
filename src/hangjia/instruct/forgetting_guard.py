"""The forgetting guard: general prompts answered by the base model itself, mixed into the training split.

Fine-tuning on domain pairs alone pulls a small model away from everything else it knew. Training on its
own answers to general prompts (self-distillation) costs it nothing to fit, so the tuned model keeps
answering general questions the way the base model did, and no external instruction set is needed.
A hundred general prompts ship with the package (general_prompts.jsonl); `select.general_prompts` replaces them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from hangjia.core.prompts import question_messages
from hangjia.instruct.synth import QAPair
from hangjia.llm.teacher import Teacher

SHIPPED_PROMPTS = Path(__file__).with_name("general_prompts.jsonl")


def load_general_prompts(path: Path | None = None) -> list[str]:
    """Prompts from a JSONL file of {"prompt": ...} records (the shipped set when path is None)."""
    path = path or SHIPPED_PROMPTS
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f'{path}:{n}: expected a JSON object with a "prompt" field.') from None
            prompts.append(" ".join(str(prompt).split()))
    return [p for p in prompts if p]


def self_distilled(prompts: Sequence[str], base: Teacher, max_tokens: int = 96) -> list[QAPair]:
    """The base model's own greedy answer to each prompt, in the training format (same system prompt)."""
    replies = base.complete([question_messages(p) for p in prompts], max_tokens=max_tokens, temperature=0.0)
    return [
        QAPair(prompt, reply.strip(), "self_distilled", "", "general", generator="general")
        for prompt, reply in zip(prompts, replies, strict=True)
        if reply and reply.strip()
    ]


def mix_in(train: list[QAPair], general: list[QAPair], ratio: float, seed: int = 0) -> list[QAPair]:
    """`train` plus general pairs making up `ratio` of the result (as many as there are, at most), shuffled in."""
    if ratio <= 0 or not general or not train:
        return list(train)
    wanted = min(len(general), round(ratio * len(train) / (1 - ratio)))
    rng = random.Random(seed)
    mixed = list(train) + rng.sample(list(general), wanted)
    rng.shuffle(mixed)
    return mixed
