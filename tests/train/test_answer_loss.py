"""The SFT loss that projects only answer positions equals TRL's full-vocabulary loss, value and gradients."""

import pytest
import torch
from trl import SFTTrainer

from hangjia.train.sft import AnswerLossSFTTrainer, build_trainer
from tests.tiny_models import tiny_train_config

PAIRS = [(f"What does fault code E{i} mean on model KD-{i * 7}?", f"Fault {i}: drain pump blocked.") for i in range(8)]


def _args(**over):
    return tiny_train_config(**over)


def _loss_and_grads(trainer, compute, batch, **kwargs):
    trainer.model.zero_grad()
    loss = compute(trainer, trainer.model, dict(batch), **kwargs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize(
    ("method", "packing", "items"),
    [("lora", False, None), ("lora", True, None), ("full", False, 40), ("lora", True, 40)],
)
def test_answer_only_projection_matches_trl(tiny_model_dir, tmp_path, method, packing, items):
    torch.set_num_threads(1)
    trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path, _args(method=method, packing=packing))
    assert isinstance(trainer, AnswerLossSFTTrainer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["labels"] != -100).float().mean() < 0.5  # most positions carry no loss
    kwargs = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    ours, ours_grads = _loss_and_grads(trainer, AnswerLossSFTTrainer.compute_loss, batch, **kwargs)
    theirs, theirs_grads = _loss_and_grads(trainer, SFTTrainer.compute_loss, batch, **kwargs)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert ours_grads.keys() == theirs_grads.keys() and ours_grads
    for name, grad in ours_grads.items():
        assert torch.allclose(grad, theirs_grads[name], rtol=1e-4, atol=1e-6), name
