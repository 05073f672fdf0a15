import json

import pytest
import torch
from transformers.utils import is_torch_bf16_available_on_device

from hangjia.llm.generation import Engine, GenerationParams
from hangjia.train import sft
from hangjia.train.sft import build_trainer, train_lora_sft
from tests.tiny_models import tiny_train_config

PAIRS = [(f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked.") for i in range(12)]


def _args(**over):
    return tiny_train_config(**{"epochs": 4, "max_length": 512, **over})


def test_loss_is_only_on_the_answer_tokens(tiny_model_dir, tmp_path):
    trainer = build_trainer(tiny_model_dir, PAIRS[:4], [], tmp_path, _args())
    batch = next(iter(trainer.get_train_dataloader()))
    tok = trainer.processing_class
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        learned = tok.decode(ids[labels != -100])
        assert learned.startswith("Fault ") and "<|im_end|>" in learned
        assert "What does fault code" not in learned
        # Everything before the answer (system prompt, question, role tags) is masked.
        prompt = tok.decode(ids[(labels == -100) & (ids != tok.pad_token_id)])
        assert "What does fault code" in prompt and "assistant" in prompt


def test_training_changes_only_the_adapter(tiny_model_dir, tmp_path):
    trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path, _args(max_steps=1))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed, "one optimizer step changed nothing"
    assert all("lora_" in n for n in changed), sorted(changed)


def test_train_lora_sft_writes_adapter_log_and_learns(tiny_model_dir, tmp_path):
    steps = []
    metrics = train_lora_sft(
        tiny_model_dir, PAIRS[:10], PAIRS[10:], tmp_path, _args(), on_step=lambda s, n, logs: steps.append(s)
    )
    assert metrics["val_loss_after"] < metrics["val_loss_before"]
    assert metrics["final_train_loss"] < metrics["first_train_loss"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    log = [json.loads(line) for line in (tmp_path / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == steps == list(range(1, metrics["steps"] + 1))

    engine = Engine(tiny_model_dir, tmp_path / "adapter")
    params = GenerationParams(max_new_tokens=8)
    msgs = [[{"role": "user", "content": PAIRS[0][0]}]]
    prepared = [engine.prepare(m, rag=False)[0] for m in msgs]
    base = engine.generate_batch(prepared, "base", params)[0].text
    tuned = engine.generate_batch(prepared, "domain", params)[0].text
    assert tuned != base  # the real-model end-to-end test checks answers change for the better


def test_gradient_checkpointing_takes_the_same_step(tiny_model_dir, tmp_path):
    runs = []
    for checkpointing in (False, True):
        trainer = build_trainer(
            tiny_model_dir, PAIRS, [], tmp_path, _args(max_steps=1, gradient_checkpointing=checkpointing)
        )
        trainer.train()
        assert trainer.model.is_activation_checkpointing == checkpointing
        lora = {n: p.detach() for n, p in trainer.model.named_parameters() if "lora_" in n}
        runs.append(([r["loss"] for r in trainer.state.log_history if "loss" in r], lora))
    (plain_loss, plain), (ckpt_loss, ckpt) = runs
    assert ckpt_loss == pytest.approx(plain_loss, abs=1e-5)
    assert all(torch.allclose(plain[n], ckpt[n], atol=1e-5) for n in plain)


@pytest.mark.skipif(not is_torch_bf16_available_on_device("cpu"), reason="torch reports no bf16 on this CPU")
def test_bf16_trains_with_packing(tiny_model_dir, tmp_path):
    trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path, _args(max_steps=1, bf16=True, packing=True))
    assert trainer.args.bf16
    trainer.train()
    fp32 = build_trainer(tiny_model_dir, PAIRS, [], tmp_path, _args(max_steps=1, packing=True))
    fp32.train()
    bf16_loss, fp32_loss = (t.state.log_history[0]["loss"] for t in (trainer, fp32))
    assert bf16_loss != fp32_loss and bf16_loss == pytest.approx(fp32_loss, abs=0.05)  # autocast was on


def test_bf16_falls_back_to_fp32_where_torch_reports_no_support(tiny_model_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sft, "is_torch_bf16_available_on_device", lambda device: False)
    trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path, _args(max_steps=1, bf16=True))
    assert not trainer.args.bf16
    assert "no bf16 support" in caplog.text
