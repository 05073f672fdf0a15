import json

import torch

from hangjia.engine import Engine, GenerationParams
from hangjia.train.sft import LoraSFTArgs, build_trainer, train_lora_sft

PAIRS = [(f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked.") for i in range(12)]


def _args(**over):
    base = dict(
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=["q_proj", "v_proj"],
        learning_rate=5e-2,
        epochs=4,
        max_steps=-1,
        batch_size=4,
        warmup_ratio=0.0,
        max_length=512,
        seed=0,
    )
    return LoraSFTArgs(**{**base, **over})


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
