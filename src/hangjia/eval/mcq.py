"""Multiple-choice evaluation by log-likelihood, in the shape of lm-evaluation-harness's MMLU task.

Each choice is scored as the summed log-probability of a continuation after the prompt; no text is
generated. `acc` compares the letters " A".." D" (MMLU's official metric); `acc_norm` compares the
choice texts, each divided by its length in bytes so that long answers are not penalised for length.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hangjia.errors import HangjiaError

LETTERS = "ABCD"
MMLU_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


@dataclass
class MCQ:
    id: str
    question: str
    choices: list[str]
    answer: int
    """0-based index of the correct choice."""
    subject: str = ""


def _answer_index(value: Any) -> int:
    """'B', 'b' or 1 (or '1') -> 1; anything else raises ValueError."""
    text = str(value).strip()
    if text.upper() in LETTERS and len(text) == 1:
        return LETTERS.index(text.upper())
    if text in {"0", "1", "2", "3"}:
        return int(text)
    raise ValueError(f"answer {value!r} is not one of A, B, C, D (or 0-3)")


def load_mcq_jsonl(path: Path, subject: str = "") -> list[MCQ]:
    """One JSON object per line: id, question, choices (4 strings), answer letter."""
    if not path.is_file():
        raise HangjiaError(f"Multiple-choice file {path} does not exist.")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            choices = [str(c) for c in row["choices"]]
            if len(choices) != 4:
                raise ValueError(f"{len(choices)} choices instead of 4")
            items.append(
                MCQ(
                    id=str(row.get("id", f"q{lineno}")),
                    question=row["question"],
                    choices=choices,
                    answer=_answer_index(row["answer"]),
                    subject=row.get("subject", subject),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise HangjiaError(
                f"{path}:{lineno} is not a multiple-choice record ({exc}); each line needs 'question', "
                "4 'choices' and an 'answer' letter A-D."
            ) from None
    if not items:
        raise HangjiaError(f"Multiple-choice file {path} has no questions.")
    return items


def load_mmlu_csv(path: Path, subject: str) -> list[MCQ]:
    """MMLU rows: question, 4 choices, answer. Reads both the original release (no header, answer letter)
    and the copy under shared/benchmarks/mmlu (header row, 0-based answer index)."""
    if not path.is_file():
        raise HangjiaError(f"MMLU file {path} does not exist.")
    items = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        start = 1
        for row in reader:
            # Fields may span lines, so a record starts one line after the previous record ended.
            lineno, start = start, reader.line_num + 1
            if lineno == 1 and [c.strip().lower() for c in row] == MMLU_HEADER:
                continue
            if not any(c.strip() for c in row):
                continue
            try:
                if len(row) != 6:
                    raise ValueError(f"{len(row)} columns instead of 6")
                items.append(
                    MCQ(
                        id=f"{subject}/{len(items)}",
                        question=row[0],
                        choices=row[1:5],
                        answer=_answer_index(row[5]),
                        subject=subject,
                    )
                )
            except ValueError as exc:
                raise HangjiaError(
                    f"{path}:{lineno} is not an MMLU row ({exc}); expected question, A, B, C, D, answer."
                ) from None
    if not items:
        raise HangjiaError(f"MMLU file {path} has no questions.")
    return items


def _format(item: MCQ) -> str:
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, item.choices, strict=True))
    return f"{item.question.strip()}{options}\nAnswer:"


def prompt(item: MCQ, shots: Sequence[MCQ] = ()) -> str:
    """lm-evaluation-harness MMLU prompt: subject header, solved shots, then the question ending in 'Answer:'."""
    header = ""
    if item.subject:
        header = (
            f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
        )
    solved = "".join(f"{_format(shot)} {LETTERS[shot.answer]}\n\n" for shot in shots)
    return header + solved + _format(item)


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-eval splits them: trailing spaces of the context move to the
    continuation, and the continuation is whatever `encode(context + continuation)` has beyond the context's
    tokens, so a token merged across the boundary is scored as part of the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        # Nothing to condition on: start from BOS (lm-eval uses the end-of-text token).
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [start], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_enc = tokenizer.encode(context, add_special_tokens=False)
    continuation_enc = whole[len(context_enc) :]
    if not continuation_enc:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens after its context")
    return context_enc, continuation_enc


def _keeps_logits(model) -> bool:
    """Whether `model.forward` can project only some positions onto the vocabulary (transformers' `logits_to_keep`)."""
    import inspect

    # A PEFT model's forward takes **kwargs and hands them to the transformers model it wraps.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Summed log-probability of each (context, continuation) pair's continuation tokens, in request order.

    Requests whose model inputs are the same token ids share one row: MMLU's " A".." D" differ only in their one
    target token, so the four are read from one forward pass (lm-eval's HF backend does the same). Only the
    positions that hold a target are projected onto the vocabulary: for SmolLM2-135M the 49,152-wide projection and
    its log-softmax are about a quarter of a full pass, and a 0-shot MMLU row needs 1 of its ~50-170 positions.
    `batch_size` counts rows, i.e. distinct inputs."""
    import torch

    max_length = getattr(model.config, "max_position_embeddings", None) or 2048
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: dict[tuple[int, ...], list[int]] = {}  # distinct inputs -> the requests read from that row
    targets: list[list[int]] = []
    for n, (context, continuation) in enumerate(requests):
        context_enc, continuation_enc = _encode_pair(tokenizer, context, continuation)
        # The last token is only a target; keep at most max_length inputs, dropping the oldest (as lm-eval).
        ids = (context_enc + continuation_enc)[-(max_length + 1) :]
        rows.setdefault(tuple(ids[:-1]), []).append(n)
        targets.append(continuation_enc[-(len(ids) - 1) :])
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up on the first batch.
    order = sorted(rows, key=lambda inputs: -len(inputs))
    keep = _keeps_logits(model)
    results = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(batch[0])
            # Right padding: with a causal mask, pads after a row's last token cannot change its logits.
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, inputs in enumerate(batch):
                input_ids[row, : len(inputs)] = torch.tensor(inputs)
                mask[row, : len(inputs)] = 1
            # Positions [first, width) cover every target of the batch; the logits start at `first`.
            first = min(len(inputs) - len(targets[n]) for inputs in batch for n in rows[inputs]) if keep else 0
            kwargs = {"logits_to_keep": torch.arange(first, width)} if keep else {}
            input_ids, mask = input_ids.to(model.device), mask.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=mask, **kwargs).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, inputs in enumerate(batch):
                end = len(inputs) - first
                for n in rows[inputs]:
                    span = logprobs[row, end - len(targets[n]) : end]
                    target = torch.tensor(targets[n], device=span.device).unsqueeze(-1)
                    results[n] = span.gather(-1, target).sum().item()
    model.train(was_training)
    return results


def score_choices(
    model, tokenizer, context: str, continuations: list[str], batch_size: int = 8
) -> list[tuple[float, int]]:
    """(summed log-probability, length in UTF-8 bytes) of each continuation after `context`."""
    lls = loglikelihoods(model, tokenizer, [(context, c) for c in continuations], batch_size)
    return [(ll, len(c.encode("utf-8"))) for ll, c in zip(lls, continuations, strict=True)]


def _shots_for(item: MCQ, shots: int, dev_items: Sequence[MCQ] | None) -> list[MCQ]:
    """The first `shots` dev items of the item's subject (MMLU uses the 5 dev rows in file order)."""
    if shots <= 0:
        return []
    pool = [d for d in dev_items or () if d.subject == item.subject and d.id != item.id]
    if len(pool) < shots:
        raise HangjiaError(
            f"{shots}-shot evaluation of {item.id} needs {shots} dev questions about {item.subject or 'its subject'}, "
            f"found {len(pool)}; pass more dev items or fewer shots."
        )
    return pool[:shots]


def evaluate_mcq(
    model,
    tokenizer,
    items: Sequence[MCQ],
    shots: int = 0,
    dev_items: Sequence[MCQ] | None = None,
    batch_size: int = 8,
    norm: bool = True,
) -> dict[str, Any]:
    """acc (letters " A".." D") and acc_norm (choice texts, log-probability per byte) over `items`.

    With `norm=False` only the letters are scored (MMLU's metric, and all lm-eval's MMLU task scores): one forward
    row per item instead of five, and `acc_norm` and the per-item `*_norm` fields are None."""
    per = 8 if norm else 4
    requests = []
    for item in items:
        context = prompt(item, _shots_for(item, shots, dev_items))
        requests += [(context, f" {letter}") for letter in LETTERS]
        if norm:
            requests += [(context, f" {choice}") for choice in item.choices]
    lls = loglikelihoods(model, tokenizer, requests, batch_size)
    per_item = []
    for n, item in enumerate(items):
        letter_lls = lls[per * n : per * n + 4]
        pred = max(range(4), key=letter_lls.__getitem__)
        pred_norm = normed = None
        if norm:
            choice_lls = lls[per * n + 4 : per * n + 8]
            # lm-eval divides by the choice's length without the leading space; bytes, not characters, here.
            normed = [ll / max(len(c.encode("utf-8")), 1) for ll, c in zip(choice_lls, item.choices, strict=True)]
            pred_norm = max(range(4), key=normed.__getitem__)
        per_item.append(
            {
                "id": item.id,
                "subject": item.subject,
                "answer": LETTERS[item.answer],
                "pred": LETTERS[pred],
                "pred_norm": None if pred_norm is None else LETTERS[pred_norm],
                "correct": pred == item.answer,
                "correct_norm": None if pred_norm is None else pred_norm == item.answer,
                "loglikelihoods": letter_lls,
                "loglikelihoods_norm": normed,
            }
        )
    n = len(per_item)
    acc_norm = (round(sum(r["correct_norm"] for r in per_item) / n, 4) if n else 0.0) if norm else None
    return {
        "acc": round(sum(r["correct"] for r in per_item) / n, 4) if n else 0.0,
        "acc_norm": acc_norm,
        "n": n,
        "per_item": per_item,
    }
