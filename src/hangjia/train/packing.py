"""Padding-free packing: a batch of tokenized examples becomes a few rows, each sample isolated from the others.

A batch of 8 short SFT examples padded to its longest one is mostly padding; packed end to end into rows of at
most `max_length` tokens it is nearly all real tokens. Packing is only correct if no token sees another sample.
Restarting `position_ids` alone does not ensure that on CPU (sdpa, eager, flex): transformers 5.23 infers the
boundaries from them only when no attention mask is passed and the KV cache is off; with the cache on, or any
2-D mask, a sample attends to the one before it. So every packed row carries an explicit block-diagonal causal
mask, 4-D, which Llama-style models use as given.

The packing is per batch: each step still sees `batch_size` examples, so steps, learning-rate schedule and loss
are those of the padded run (the test checks the loss is equal); only the padding is gone.

With `share_prefix`, the tokens every example of the batch begins with (the chat template's system turn and the
start of the user turn: 23 of the 64 tokens of an average kestrel pair) are laid down once per row, and every
sample of the row attends to that one copy as if it were its own start (its positions continue from it). The
model computes the same function of the same tokens, so loss and gradients are those of the unshared batch
(tested without dropout; LoRA dropout then draws one mask for the shared copy instead of one per sample). Only
prompt tokens are ever shared: the prefix stops before any example's first target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

IGNORE_INDEX = -100


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Example indices per row: as few rows as fit in `max_length` tokens each, filled evenly.

    Rows are padded to the longest one, so even rows matter as much as few rows: longest example first,
    each into the shortest row (LPT); one more row whenever the longest row would overflow.
    """
    if any(n > max_length for n in lengths):
        raise ValueError(f"An example of {max(lengths)} tokens does not fit max_length={max_length}; truncate first.")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    count = max(1, math.ceil(sum(lengths) / max_length))
    while True:
        rows: list[list[int]] = [[] for _ in range(count)]
        used = [0] * count
        for i in order:
            r = min(range(count), key=lambda r: (used[r], r))
            rows[r].append(i)
            used[r] += lengths[i]
        if max(used) <= max_length:
            return [row for row in rows if row]
        count += 1


SHARED = -1
"""Segment id of a row's shared prefix: every sample segment (ids ≥ 1) of the row sees it; padding (0) does not."""


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows, L) segment ids → (rows, 1, L, L) additive mask: 0 where the key is in the query's segment (or in the
    row's shared prefix, for a sample's query) and not after it, the dtype's minimum elsewhere. Additive, not
    boolean: eager attention adds the mask to the scores."""
    length = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    same |= (segment_ids[:, :, None] > 0) & (segment_ids[:, None, :] == SHARED)
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@dataclass
class PackingCollator:
    """Packs tokenized examples (`input_ids`, optional `labels`) into rows of at most `max_length` tokens.

    Returns `input_ids`, `labels` (-100 on padding and on each sample's first token, so no sample is
    predicted from the one before it), `position_ids` restarting at 0 per sample, and `attention_mask`
    as a (rows, 1, L, L) block-diagonal causal mask. Rows are right-padded to the longest row; the padding
    is a segment of its own, so it never reaches a real token and never leaves a query with no key.
    """

    pad_token_id: int
    max_length: int
    mask_dtype: torch.dtype = torch.float32
    share_prefix: bool = False
    """Lay the batch's common leading prompt tokens down once per row (see the module docstring)."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [list(e["input_ids"]) for e in examples]
        labels = [list(e["labels"]) if "labels" in e else list(e["input_ids"]) for e in examples]
        shared = shared_prefix_length(ids, labels) if self.share_prefix else 0
        prefix = ids[0][:shared]
        rows = pack_rows([len(x) - shared for x in ids], self.max_length - shared)
        width = shared + max(sum(len(ids[i]) - shared for i in row) for row in rows)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        out_labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segments = torch.zeros(shape, dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, :shared] = torch.tensor(prefix, dtype=torch.long)
            position_ids[r, :shared] = torch.arange(shared)
            segments[r, :shared] = SHARED
            start = shared
            for seg, i in enumerate(row, start=1):
                end = start + len(ids[i]) - shared
                input_ids[r, start:end] = torch.tensor(ids[i][shared:])
                out_labels[r, start:end] = torch.tensor(labels[i][shared:])
                # Never a target: it would be predicted from the sample before it. Behind a shared prefix it is a
                # prompt token anyway (shared_prefix_length stops one token before the first target).
                out_labels[r, start] = IGNORE_INDEX
                position_ids[r, start:end] = torch.arange(shared, shared + end - start)
                segments[r, start:end] = seg
                start = end
            position_ids[r, start:] = torch.arange(width - start)  # padding: segment 0, its own positions
        return {
            "input_ids": input_ids,
            "labels": out_labels,
            "position_ids": position_ids,
            "attention_mask": block_causal_mask(segments, self.mask_dtype),
        }


def shared_prefix_length(ids: list[list[int]], labels: list[list[int]], minimum: int = 2) -> int:
    """Leading tokens all examples share that may be laid down once: none is a target, nor is the token after
    them (each sample's first own token loses its label), and every example keeps at least one token of its own.
    Below `minimum` tokens sharing saves nothing worth a different layout, so 0."""
    if len(ids) < 2:
        return 0
    limit = min(len(x) for x in ids) - 1
    n = 0
    while n < limit and all(x[n] == ids[0][n] for x in ids) and all(y[n + 1] == IGNORE_INDEX for y in labels):
        n += 1
    return n if n >= minimum else 0


def padding_stats(lengths: list[int], batch_size: int, max_length: int) -> dict[str, int]:
    """Tokens a pass over `lengths` (in order, `batch_size` a batch) costs padded vs packed, and the real ones."""
    padded = packed = 0
    for b in range(0, len(lengths), batch_size):
        batch = [min(n, max_length) for n in lengths[b : b + batch_size]]
        padded += len(batch) * max(batch)
        rows = pack_rows(batch, max_length)
        packed += len(rows) * max(sum(batch[i] for i in row) for row in rows)
    return {"real": sum(min(n, max_length) for n in lengths), "padded": padded, "packed": packed}
