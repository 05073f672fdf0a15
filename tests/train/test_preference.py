import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hangjia.core.config import PreferenceConfig, TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import question_messages
from hangjia.llm.models import load_tokenizer
from hangjia.train.preference import (
    build_dpo_trainer,
    build_reward_trainer,
    score,
    train_dpo,
    train_reward_model,
)

PAIRS = [
    (f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked.", f"Maybe the weather, try {i} later.")
    for i in range(8)
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from intra-op threads; on a shared 2-core machine the threads spin and
    these tests ran 5x slower (110 s instead of 21 s for the two preference and pretrain files)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The shape of a fresh adapter comes from the train section.
LORA = TrainConfig(lora_r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def _args(**over):
    base = dict(learning_rate=2e-2, epochs=4, batch_size=4, warmup_ratio=0.0)
    return PreferenceConfig(**{**base, **over})


@torch.no_grad()
def _answer_logprob(model, tok, question: str, answer: str) -> float:
    """Sum of log p(answer token) after the chat prompt, computed directly (not from TRL)."""
    prompt = tok.apply_chat_template(question_messages(question), add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(
        question_messages(question) + [{"role": "assistant", "content": answer}], tokenize=False
    )
    assert full.startswith(prompt)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
    logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    return logps[torch.arange(len(targets)), targets][len(p_ids) - 1 :].sum().item()


def _margins(model, tok) -> list[float]:
    return [_answer_logprob(model, tok, q, c) - _answer_logprob(model, tok, q, r) for q, c, r in PAIRS]


def _random_sft_adapter(base_dir, out):
    """A LoRA adapter with non-zero weights, standing in for an SFT result (so it differs from the base)."""
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # LoRA starts as a no-op (B = 0); make it move the model by whole nats
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 1.0)
    peft_model.save_pretrained(out)
    return out


def test_dpo_step_changes_only_the_adapter(tiny_model_dir, tmp_path):
    trainer = build_dpo_trainer(tiny_model_dir, PAIRS, tmp_path, _args(max_steps=1), LORA)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed, "one DPO step changed nothing"
    assert all("lora_" in n for n in changed), sorted(changed)


def test_train_dpo_raises_the_chosen_over_rejected_margin(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    before = _margins(base, tok)

    steps = []
    metrics = train_dpo(tiny_model_dir, PAIRS, tmp_path, _args(), LORA, on_step=lambda s, n, logs: steps.append(s))

    tuned = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    after = _margins(tuned, tok)
    gains = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(g > 0 for g in gains) >= 7, gains
    assert sum(gains) / len(gains) > 1.0, gains  # nats per pair
    # TRL's own view agrees: the implicit reward separates the pairs by the end.
    assert metrics["first_reward_margin"] == 0.0  # policy == reference before the first update
    assert metrics["final_reward_accuracy"] == 1.0 and metrics["final_reward_margin"] > 0
    assert metrics["final_loss"] < metrics["first_loss"]
    log = [json.loads(line) for line in (tmp_path / "trainer_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == steps == list(range(1, metrics["steps"] + 1))
    assert "rewards/margins" in log[0]


def test_dpo_from_an_sft_adapter_trains_that_adapter_against_itself(tiny_model_dir, tmp_path):
    sft = _random_sft_adapter(tiny_model_dir, tmp_path / "sft")
    sft_weights = load_file(sft / "adapter_model.safetensors")
    trainer = build_dpo_trainer(tiny_model_dir, PAIRS, tmp_path, _args(max_steps=2), LORA, adapter=sft)
    model = trainer.model
    # The SFT weights are loaded into the trainable adapter, not a fresh one of LORA.target_modules.
    assert model.peft_config["default"].target_modules == {"v_proj"}
    assert all(p.requires_grad for n, p in model.named_parameters() if ".default." in n)
    live = get_peft_model_state_dict(model, adapter_name="default")
    assert live.keys() == sft_weights.keys()
    assert all(torch.equal(live[k], sft_weights[k]) for k in live)

    tok = load_tokenizer(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_logp = _answer_logprob(base, tok, *PAIRS[0][:2])
    sft_logp = _answer_logprob(PeftModel.from_pretrained(base, sft).eval(), tok, *PAIRS[0][:2])
    assert abs(sft_logp - base_logp) > 0.2  # so a base-model reference would show in the rewards below

    metrics = train_dpo(tiny_model_dir, PAIRS, tmp_path / "dpo", _args(max_steps=2), LORA, adapter=sft)
    # The reference is the SFT model: before any update the implicit rewards β·log(π/π_ref) are zero.
    log = [json.loads(line) for line in (tmp_path / "dpo" / "trainer_log.jsonl").read_text().splitlines()]
    assert abs(log[0]["rewards/chosen"]) < 1e-6 and abs(log[0]["rewards/rejected"]) < 1e-6, log[0]
    assert metrics["from_adapter"] == str(sft)
    out = tmp_path / "dpo" / "adapter"
    assert not (out / "ref").exists()  # only the policy adapter is saved
    tuned = load_file(out / "adapter_model.safetensors")
    assert tuned.keys() == sft_weights.keys()
    assert any(not torch.equal(tuned[k], sft_weights[k]) for k in tuned)


def test_reward_step_changes_only_the_adapter_and_the_score_head(tiny_model_dir, tmp_path):
    trainer = build_reward_trainer(tiny_model_dir, PAIRS, tmp_path, _args(max_steps=1), LORA)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any("lora_" in n for n in changed) and any("score" in n for n in changed), sorted(changed)
    assert all("lora_" in n or "score.modules_to_save" in n for n in changed), sorted(changed)


def test_reward_model_learns_to_rank_chosen_above_rejected(tiny_model_dir, tmp_path):
    questions = [q for q, _, _ in PAIRS]
    untrained = build_reward_trainer(tiny_model_dir, PAIRS, tmp_path, _args(), LORA)  # same seed, same initial head
    untrained.model.save_pretrained(tmp_path / "untrained")
    untrained.processing_class.save_pretrained(tmp_path / "untrained")

    def accuracy(model_dir):
        chosen = score(model_dir, questions, [c for _, c, _ in PAIRS])
        rejected = score(model_dir, questions, [r for _, _, r in PAIRS])
        return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(PAIRS)

    before = accuracy(tmp_path / "untrained")
    metrics = train_reward_model(tiny_model_dir, PAIRS[:6], tmp_path / "rm", _args(), LORA, val_pairs=PAIRS[6:])
    after = accuracy(tmp_path / "rm" / "reward_model")
    assert after >= 0.875 and after > before, (before, after)
    assert metrics["val_accuracy_after"] > metrics["val_accuracy_before"]
    assert metrics["final_loss"] < metrics["first_loss"]
    # Scoring one at a time gives the same rewards as the padded batch.
    batched = score(tmp_path / "rm" / "reward_model", questions, [c for _, c, _ in PAIRS])
    single = [score(tmp_path / "rm" / "reward_model", [q], [c])[0] for q, c, _ in PAIRS[:2]]
    assert all(abs(a - b) < 1e-4 for a, b in zip(single, batched, strict=False)), (single, batched)


def test_dpo_explains_a_missing_sft_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(HangjiaError, match="not a PEFT adapter folder"):
        build_dpo_trainer(tiny_model_dir, PAIRS, tmp_path, _args(), LORA, adapter=tmp_path / "nowhere")
