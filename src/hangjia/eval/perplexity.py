"""Perplexity over held-out texts with a sliding window, as in the Hugging Face perplexity guide.

A text longer than `max_length` tokens is scored in windows starting every `stride` tokens; each token is a target
exactly once, in the first window that reaches it, with at least `max_length - stride` tokens of context (all of
them in the first window). Perplexity is token-weighted over all texts: exp(summed NLL / tokens scored), so a long
text counts for more than a short one, as when the texts were one stream.

Each text starts from the start-of-text token (BOS, else EOS, as `mcq.py` does) so that its first token is scored
too; without one, a text's first token has no context and is not a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def windows(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, first_target) per window over `length` tokens: inputs are [begin, end), targets the tokens
    at [first_target, end). Together the targets cover 1..length-1 once each."""
    if not 0 < stride < max_length:
        raise ValueError(f"stride must be between 1 and max_length - 1 ({max_length - 1}), got {stride}")
    spans, prev_end = [], 0
    for begin in range(0, length, stride):
        end = min(begin + max_length, length)
        # Token `begin` has no context inside its window; with stride < max_length it was a target earlier.
        first = max(prev_end, begin + 1)
        if first < end:
            spans.append((begin, end, first))
        prev_end = end
        if end == length:
            break
    return spans


def negative_log_likelihood(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 512,
    stride: int = 256,
    batch_size: int = 4,
    add_start_token: bool = True,
) -> tuple[float, int]:
    """(summed negative log-likelihood in nats, tokens scored) over `texts`, windowed as `perplexity` describes."""
    import torch

    context = getattr(model.config, "max_position_embeddings", None)
    if context and max_length > context:
        raise ValueError(f"max_length {max_length} exceeds the model's context of {context} tokens")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    requests: list[tuple[list[int], int]] = []  # (window inputs, index of the first target within them)
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        if add_start_token and start is not None:
            ids = [start, *ids]
        for begin, end, first in windows(len(ids), max_length, stride):
            requests.append((ids[begin:end], first - begin))
    if not requests:
        raise ValueError("the texts have no tokens to score")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Longest first: similar lengths share a batch, and an out-of-memory error shows up on the first batch.
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]))
    nll, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(order), batch_size):
            batch = [requests[i] for i in order[lo : lo + batch_size]]
            width = max(len(ids) for ids, _ in batch)
            # Right padding: with a causal mask, pads after a row's last token cannot change its logits.
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, _) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits
            for row, (ids, first) in enumerate(batch):
                # Position p predicts token p + 1; one row at a time keeps float32 log-softmax at width × vocab.
                predictors = logits[row, first - 1 : len(ids) - 1].float()
                targets = torch.tensor(ids[first:], device=predictors.device)
                nll += torch.nn.functional.cross_entropy(predictors, targets, reduction="sum").item()
                count += len(targets)
    model.train(was_training)
    return nll, count


def perplexity(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 512,
    stride: int = 256,
    batch_size: int = 4,
    add_start_token: bool = True,
) -> float:
    """Token-weighted perplexity of `model` over `texts`: windows of `max_length` tokens every `stride` tokens
    (stride < max_length), `batch_size` windows per forward pass."""
    nll, count = negative_log_likelihood(
        model,
        tokenizer,
        texts,
        max_length=max_length,
        stride=stride,
        batch_size=batch_size,
        add_start_token=add_start_token,
    )
    return math.exp(nll / count)
