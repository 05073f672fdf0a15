"""Padding-free packing: a batch of tokenized examples becomes a few rows, each sample isolated from the others.

A batch of 8 short SFT examples padded to its longest one is mostly padding; packed end to end into rows of at
most `max_length` tokens it is nearly all real tokens. Packing is only correct if no token sees another sample.
Restarting `position_ids` alone does not ensure that on CPU (sdpa, eager, flex): transformers 5.23 infers the
boundaries from them only when no attention mask is passed and the KV cache is off; with the cache on, or any
2-D mask, a sample attends to the one before it. So every packed row carries an explicit block-diagonal causal
mask, 4-D, which Llama-style models use as given.

The packing is per batch: each step still sees `batch_size` examples, so steps, learning-rate schedule and loss
are those of the padded run (the test checks the loss is equal); only the padding is gone.
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


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(rows, L) segment ids → (rows, 1, L, L) additive mask: 0 where the key is in the query's segment and not
    after it, the dtype's minimum elsewhere. Additive, not boolean: eager attention adds the mask to the scores."""
    length = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
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

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [list(e["input_ids"]) for e in examples]
        labels = [list(e["labels"]) if "labels" in e else list(e["input_ids"]) for e in examples]
        rows = pack_rows([len(x) for x in ids], self.max_length)
        width = max(sum(len(ids[i]) for i in row) for row in rows)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        out_labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segments = torch.zeros(shape, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for seg, i in enumerate(row, start=1):
                end = start + len(ids[i])
                input_ids[r, start:end] = torch.tensor(ids[i])
                out_labels[r, start:end] = torch.tensor(labels[i])
                out_labels[r, start] = IGNORE_INDEX
                position_ids[r, start:end] = torch.arange(end - start)
                segments[r, start:end] = seg
                start = end
            position_ids[r, start:] = torch.arange(width - start)  # padding: segment 0, its own positions
        return {
            "input_ids": input_ids,
            "labels": out_labels,
            "position_ids": position_ids,
            "attention_mask": block_causal_mask(segments, self.mask_dtype),
        }


def padding_stats(lengths: list[int], batch_size: int, max_length: int) -> dict[str, int]:
    """Tokens a pass over `lengths` (in order, `batch_size` a batch) costs padded vs packed, and the real ones."""
    padded = packed = 0
    for b in range(0, len(lengths), batch_size):
        batch = [min(n, max_length) for n in lengths[b : b + batch_size]]
        padded += len(batch) * max(batch)
        rows = pack_rows(batch, max_length)
        packed += len(rows) * max(sum(batch[i] for i in row) for row in rows)
    return {"real": sum(min(n, max_length) for n in lengths), "padded": padded, "packed": packed}
