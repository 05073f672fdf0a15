"""Principled selection of training pairs: diverse (k-center core-set), hard (IFD), and split without leakage.

- `k_center_greedy`: the greedy 2-approximation for k-center (Gonzalez 1985; the core-set of Sener & Savarese,
  2018) over pair embeddings, so a budget covers the whole space instead of its densest corner.
- `ifd_scores`: Instruction-Following Difficulty (Li et al., "From Quantity to Quality", 2023), how much the
  question helps the model predict the answer.
- `one_shot_gains`: the Nuggets golden score (Li et al., "One-Shot Learning as Instruction Data Prospector",
  2023): on how many anchor tasks a pair, used as a one-shot demonstration, lowers the answer loss.
- `grouped_split`: a train/val/test split that keeps every pair of one source document in one split, so
  validation never sees facts from a document it was trained on.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from hangjia.core.prompts import question_messages


def k_center_greedy(embeddings: np.ndarray, budget: int, first: int | None = None) -> list[int]:
    """Row indices chosen by greedy k-center, in selection order.

    Starts from `first` (default: the row closest to the mean direction), then repeatedly adds the row farthest
    from its nearest chosen centre; ties go to the lowest index. Distance is cosine distance 1 - cos(a, b) on
    the L2-normalised rows (an all-zero row is at distance 1 from everything). On unit vectors
    1 - cos = ‖a - b‖² / 2, a monotone function of Euclidean distance, so the choices are those of Euclidean
    k-center on the normalised rows and the factor-2 guarantee holds for that (chord) radius.
    O(n · budget) time; O(n) memory beyond the input (a running nearest-centre distance per row).
    """
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (rows × dims), got shape {x.shape}.")
    n = len(x)
    budget = min(budget, n)
    if budget <= 0:
        return []
    # Norms instead of a normalised copy: n floats rather than n × dims.
    norms = np.linalg.norm(x, axis=1).astype(np.float64)
    norms[norms == 0] = 1.0  # a zero row has cosine 0 with everything

    def distance_to(c: int) -> np.ndarray:
        return 1.0 - (x @ x[c]).astype(np.float64) / (norms * norms[c])

    if first is None:
        mean = (1.0 / norms) @ x  # n × the mean of the unit rows; its length does not change the argmax
        first = int(np.argmax((x @ mean).astype(np.float64) / norms))
    elif not 0 <= first < n:
        raise ValueError(f"first={first} is not a row index of the {n} embeddings.")
    chosen = [first]
    nearest = distance_to(first)
    nearest[first] = -np.inf  # never chosen again, even when duplicates leave every distance at 0
    while len(chosen) < budget:
        c = int(np.argmax(nearest))  # argmax returns the first maximum: lowest index on ties
        chosen.append(c)
        np.minimum(nearest, distance_to(c), out=nearest)
        nearest[c] = -np.inf
    return chosen


def ifd_scores(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Instruction-Following Difficulty of each (question, answer) pair: s(A | Q) / s(A).

    s(A | Q) is the mean cross-entropy of the answer tokens after the chat-formatted question (system prompt +
    question, `add_generation_prompt=True`); s(A) is the mean cross-entropy of the same tokens with no question.
    The answer tokens are the answer followed by the end-of-turn token (the tokenizer's eos), tokenised on their
    own so both losses score exactly the same ids. With no question the first answer token still needs a
    context to be predicted from: the bos token (eos when there is none), as at the start of a document.
    IFD near or above 1 means the question does not help (the answer is generic or unrelated to it); the paper
    keeps the high-IFD pairs below 1. Batches are right-padded, so padding never changes a score.
    """
    if not pairs:
        return []
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    conditioned: list[tuple[list[int], list[int]]] = []
    alone: list[tuple[list[int], list[int]]] = []
    for question, answer in pairs:
        prompt_text = tokenizer.apply_chat_template(
            question_messages(question), add_generation_prompt=True, tokenize=False
        )
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        conditioned.append((prompt, target))
        alone.append(([start], target))
    with_q = _answer_losses(model, tokenizer, conditioned, batch_size)
    without_q = _answer_losses(model, tokenizer, alone, batch_size)
    return [a / b for a, b in zip(with_q, without_q, strict=True)]


def one_shot_gains(
    model, tokenizer, candidates: list[tuple[str, str]], anchors: list[tuple[str, str]], batch_size: int = 8
) -> list[float]:
    """Nuggets golden score of each candidate (question, answer): the share of anchors whose answer loss falls when
    the candidate is shown first as a one-shot demonstration (a user turn and an assistant turn before the anchor's
    question), against the zero-shot loss. 1.0: the pair helps the model on every anchor; 0.0: on none.
    An anchor that is the candidate itself is skipped (its own answer would be copied, not learnt from).
    Costs len(candidates) × len(anchors) forward passes of a prompt one demonstration long.
    """
    if not candidates or not anchors:
        return [0.0] * len(candidates)

    def row(demo: tuple[str, str] | None, anchor: tuple[str, str]) -> tuple[list[int], list[int]]:
        messages = question_messages(anchor[0])
        if demo is not None:
            shot = [{"role": "user", "content": demo[0]}, {"role": "assistant", "content": demo[1]}]
            messages = [messages[0], *shot, messages[1]]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        target = tokenizer(anchor[1], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        return tokenizer(text, add_special_tokens=False)["input_ids"], target

    zero = _answer_losses(model, tokenizer, [row(None, a) for a in anchors], batch_size)
    jobs = [(c, a) for c in range(len(candidates)) for a in range(len(anchors)) if candidates[c] != anchors[a]]
    losses = _answer_losses(model, tokenizer, [row(candidates[c], anchors[a]) for c, a in jobs], batch_size)
    wins, tries = [0] * len(candidates), [0] * len(candidates)
    for (c, a), loss in zip(jobs, losses, strict=True):
        tries[c] += 1
        wins[c] += loss < zero[a]
    return [w / t if t else 0.0 for w, t in zip(wins, tries, strict=True)]


def _answer_losses(model, tokenizer, rows: list[tuple[list[int], list[int]]], batch_size: int) -> list[float]:
    """Mean cross-entropy over the target ids of each (context ids, target ids) row."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    losses: list[float] = [0.0] * len(rows)
    # Similar lengths batched together waste little on padding; results go back to input order.
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    try:
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                batch = [rows[i] for i in order[s : s + batch_size]]
                width = max(len(c) + len(t) for c, t in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                scored = torch.zeros((len(batch), width), dtype=torch.bool)  # positions whose token is a target
                for r, (context, target) in enumerate(batch):
                    seq = context + target
                    ids[r, : len(seq)] = torch.tensor(seq)
                    mask[r, : len(seq)] = 1
                    scored[r, len(context) : len(seq)] = True
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                # Logits at position p predict the token at p + 1; only the target positions are normalised.
                scored = scored[:, 1:]
                targets = ids[:, 1:][scored].to(device)
                nll = F.cross_entropy(logits[:, :-1][scored.to(device)].float(), targets, reduction="none").cpu()
                per_row = torch.split(nll, scored.sum(dim=1).tolist())
                for i, row_nll in zip(order[s : s + batch_size], per_row, strict=True):
                    losses[i] = row_nll.mean().item()
    finally:
        model.train(was_training)
    return losses


def grouped_split(
    items: list[dict[str, Any]],
    key: str = "source",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Train, val and test items with every group (items sharing `item[key]`) in exactly one split.

    Groups are shuffled by `seed`, then each goes to the split furthest below its target size
    (fraction × items; ties to the earlier split). A split is chosen only while below its target, so none
    overshoots by a group's size or more, and with three splits none falls short by that much either.
    Items keep their input order within a split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (train, val, test), not {tuple(fractions)}.")
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        if key not in item:
            raise ValueError(f"Item {i} has no {key!r} field to group by; fields: {sorted(item)}.")
        groups.setdefault(item[key], []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    total = sum(fractions)
    deficit = [f / total * len(items) for f in fractions]
    split_of = [0] * len(items)
    for group in order:
        s = max(range(3), key=lambda k: (deficit[k], -k))
        deficit[s] -= len(groups[group])
        for i in groups[group]:
            split_of[i] = s
    splits: tuple[list, list, list] = ([], [], [])
    for item, s in zip(items, split_of, strict=True):
        splits[s].append(item)
    return splits
