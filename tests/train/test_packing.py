import pytest
import torch
from transformers import AutoModelForCausalLM

from hangjia.train.packing import (
    PackingCollator,
    block_causal_mask,
    pack_rows,
    padding_stats,
    shared_prefix_length,
)
from hangjia.train.sft import build_trainer
from tests.tiny_models import tiny_train_config

FIRST = list(range(5, 25))
SECOND = list(range(30, 41))
PAIRS = [
    (f"What does fault code E{i}{' exactly' * (i % 4)} mean?", f"Fault {i}: pump{' blocked' * (i % 3)}.")
    for i in range(8)
]


def _args(**over):
    return tiny_train_config(**{"max_steps": 2, "max_length": 512, **over})


def test_pack_rows_uses_few_even_rows_within_max_length():
    lengths = [60, 55, 41, 136, 70, 48, 52, 90]
    rows = pack_rows(lengths, 256)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    used = [sum(lengths[i] for i in row) for row in rows]
    assert len(rows) == 3 and max(used) <= 256
    assert max(used) - min(used) < max(lengths)  # filled evenly, since every row is padded to the longest
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([300], 256)


def test_collator_restarts_positions_and_masks_sample_starts_and_padding():
    batch = PackingCollator(pad_token_id=0, max_length=24)(
        [{"input_ids": FIRST, "labels": FIRST}, {"input_ids": SECOND}, {"input_ids": [3, 4, 5]}]
    )
    ids, labels, pos = batch["input_ids"], batch["labels"], batch["position_ids"]
    assert ids.shape == (2, 20)  # 20 | 11 + 3 (+ 6 padding)
    assert ids[0].tolist() == FIRST and ids[1, :14].tolist() == SECOND + [3, 4, 5]
    assert pos[1, :14].tolist() == list(range(11)) + [0, 1, 2]
    # The first token of each sample is never a target: it would be predicted from the sample before it.
    assert labels[0, 0] == labels[1, 0] == labels[1, 11] == -100
    assert labels[1, 1:11].tolist() == SECOND[1:] and (labels[1, 14:] == -100).all()
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 20, 20) and mask.dtype == torch.float32
    allowed = mask[1, 0] == 0
    assert allowed[12, 11] and allowed[12, 12] and not allowed[12, 10] and not allowed[12, 13]
    assert not allowed[16, :14].any()  # padding sees only padding


def test_block_causal_mask_is_block_diagonal_and_causal():
    allowed = block_causal_mask(torch.tensor([[1, 1, 2, 2, 2]]))[0, 0] == 0
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(allowed, expected)


def test_shared_prefix_stops_before_the_first_target():
    ids = [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 9], [1, 2, 3, 7, 8, 8]]
    prompt_only = [[-100] * 4 + x[4:] for x in ids]
    assert shared_prefix_length(ids, [[-100] * len(x) for x in ids]) == 3  # the common tokens 1, 2, 3
    # Example 1's first target is at position 4, so position 3 must stay its own (it loses its label).
    assert shared_prefix_length([ids[0], ids[1]], prompt_only[:2]) == 3
    early = [[-100, -100, 2, 3, 4, 5, 6], [-100, -100, 3, 4, 9]]
    assert shared_prefix_length([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 9]], early) == 0  # 1 token: not worth it
    assert shared_prefix_length([[1, 2, 3]], [[-100] * 3]) == 0  # one example shares with no one
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]], [[-100] * 3] * 2) == 2  # each keeps a token of its own


def test_collator_lays_a_shared_prefix_down_once_per_row():
    prefix = [7, 8, 9]
    a, b = prefix + [10, 11, 12], prefix + [20, 21]
    labels_a, labels_b = [-100] * 4 + [11, 12], [-100] * 4 + [21]
    batch = PackingCollator(pad_token_id=0, max_length=16, share_prefix=True)(
        [{"input_ids": a, "labels": labels_a}, {"input_ids": b, "labels": labels_b}]
    )
    assert batch["input_ids"].tolist() == [prefix + [10, 11, 12, 20, 21]]
    # Each sample's positions continue from the prefix, as in the sample alone.
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 5, 3, 4]]
    assert batch["labels"].tolist() == [[-100] * 4 + [11, 12, -100, 21]]
    allowed = batch["attention_mask"][0, 0] == 0
    assert allowed[6, :3].all() and allowed[6, 6] and not allowed[6, 3:6].any()  # b sees the prefix, not a
    assert allowed[2, :3].all() and not allowed[2, 3:].any()
    # Unshared, the same examples cost 11 tokens; the row above is 8.
    plain = PackingCollator(pad_token_id=0, max_length=16)([{"input_ids": a, "labels": labels_a}, {"input_ids": b}])
    assert plain["input_ids"].shape == (1, 11)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_sample_behind_a_shared_prefix_computes_as_alone(tiny_model_dir, attn):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    prefix = list(range(50, 58))
    samples = [prefix + FIRST, prefix + SECOND, prefix + [3, 4, 5]]
    collate = PackingCollator(pad_token_id=0, max_length=64, share_prefix=True)
    batch = collate([{"input_ids": x, "labels": [-100] * len(x)} for x in samples])
    assert batch["input_ids"].shape == (1, 8 + 20 + 11 + 3)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        start = len(prefix)
        for x in samples:
            alone = model(torch.tensor([x])).logits[0]
            torch.testing.assert_close(packed[: len(prefix)], alone[: len(prefix)], atol=1e-5, rtol=0)
            own = len(x) - len(prefix)
            torch.testing.assert_close(packed[start : start + own], alone[len(prefix) :], atol=1e-5, rtol=0)
            start += own


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_sample_sees_only_itself(tiny_model_dir, attn):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn).eval()
    batch = PackingCollator(pad_token_id=0, max_length=64)([{"input_ids": FIRST}, {"input_ids": SECOND}])
    start = len(FIRST)
    with torch.no_grad():
        alone = model(torch.tensor([SECOND])).logits[0]
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, start : start + len(SECOND)]
        # Control: restarted position_ids with an ordinary padding mask, i.e. packing without isolation.
        leaky = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=torch.ones_like(batch["input_ids"]),
        ).logits[0, start : start + len(SECOND)]
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    assert (leaky - alone).abs().max() > 1e-2  # so the assertion above can fail


def test_packed_training_gets_the_mask_and_the_padded_runs_losses(tiny_model_dir, tmp_path):
    losses, masks = {}, []
    for packing in (False, True):
        trainer = build_trainer(
            tiny_model_dir, PAIRS, [], tmp_path / str(packing), _args(packing=packing, share_prefix=False)
        )
        decoder = trainer.model.get_base_model().model
        decoder.register_forward_pre_hook(lambda m, a, kw: masks.append(kw["attention_mask"]), with_kwargs=True)
        trainer.train()
        losses[packing] = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    padded_masks, packed_masks = masks[:2], masks[2:]
    assert all(m.dim() == 2 for m in padded_masks)
    assert all(m.dim() == 4 and m.shape[0] < 4 for m in packed_masks)  # 4 examples a step in fewer rows
    # Block-diagonal, not merely causal: some earlier tokens are hidden from later ones.
    assert all((m[:, 0].tril() < 0).any() for m in packed_masks)
    # Same examples per step, no sample seeing another: packing changes the padding, not the loss.
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_shared_prefix_training_has_the_unshared_losses_and_weights(tiny_model_dir, tmp_path):
    losses, weights, widths = {}, {}, []
    for name, over in {"padded": {}, "shared": {"packing": True, "share_prefix": True}}.items():
        trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path / name, _args(**over))
        decoder = trainer.model.get_base_model().model
        decoder.register_forward_pre_hook(lambda m, a, kw: widths.append(kw["input_ids"].numel()), with_kwargs=True)
        trainer.train()
        losses[name] = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        weights[name] = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    padded_tokens, shared_tokens = sum(widths[:2]), sum(widths[2:])
    assert shared_tokens < 0.8 * padded_tokens  # the system turn and "<|im_start|>user\nWhat does fault code E"
    assert losses["shared"] == pytest.approx(losses["padded"], abs=1e-5)
    for key, value in weights["padded"].items():
        torch.testing.assert_close(weights["shared"][key], value, atol=1e-5, rtol=1e-4)


def test_padding_stats_counts_a_short_example_mix():
    stats = padding_stats([60, 55, 41, 136, 70, 48, 52, 90], batch_size=4, max_length=256)
    assert stats == {"real": 552, "padded": 4 * 136 + 4 * 90, "packed": 2 * 156 + 2 * 138}
