"""Prefix tuning and P-tuning through PEFT: trained, saved, and served by the same engine as LoRA."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from hangjia.core.config import TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.llm.generation import Engine
from hangjia.train.sft import build_trainer, sft_settings, train_lora_sft
from tests.tiny_models import tiny_train_config

PAIRS = [(f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked.") for i in range(12)]


def _args(**over):
    return tiny_train_config(**{"epochs": 4, "num_virtual_tokens": 8, **over})


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("method", ["prefix", "ptuning"])
def test_prompt_learning_trains_only_its_virtual_tokens_and_serves(tiny_model_dir, tmp_path, method):
    trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path / "probe", _args(method=method, max_steps=1))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    # PEFT keeps both methods' virtual tokens in `prompt_encoder` (P-tuning adds an MLP head there).
    assert changed and all(n.startswith("prompt_encoder.") for n in changed), sorted(changed)

    metrics = train_lora_sft(tiny_model_dir, PAIRS[:10], PAIRS[10:], tmp_path, _args(method=method))
    assert metrics["val_loss_after"] < metrics["val_loss_before"]
    engine = Engine(tiny_model_dir, tmp_path / "adapter")
    prompt = engine.prepare([{"role": "user", "content": PAIRS[0][0]}], rag=False)[0]
    enc = engine._encode([engine.format(prompt)], 8)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        expected = plain(**enc).logits[0, -1]
        with engine.using("base") as base:
            off = base(**enc).logits[0, -1]
        with engine.using("domain") as domain:
            on = domain(**enc).logits[0, -1]
    # `base` is the bare model (virtual tokens off); `domain` is conditioned on them.
    assert torch.allclose(off, expected, atol=1e-5)
    assert not torch.allclose(on, expected, atol=1e-3)


def test_packing_is_refused_with_virtual_tokens(tiny_model_dir, tmp_path):
    with pytest.raises(HangjiaError, match="packing needs train.method lora or full"):
        build_trainer(tiny_model_dir, PAIRS, [], tmp_path, _args(method="prefix", packing=True))


@pytest.mark.parametrize("method", ["prefix", "ptuning"])
def test_the_train_section_trains_virtual_tokens_unpacked(method):
    section = TrainConfig(method=method)  # train.packing is on by default
    assert section.packing and not sft_settings(section).packing
    assert section.packing  # the section itself, which the stage fingerprints, is left as it is
    assert sft_settings(TrainConfig(method="lora")).packing and sft_settings(TrainConfig(method="full")).packing


def test_full_fine_tuning_saves_a_whole_model_that_the_engine_serves_beside_the_base(tiny_model_dir, tmp_path):
    trainer = build_trainer(tiny_model_dir, PAIRS, [], tmp_path / "probe", _args(method="full", max_steps=1))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert {"model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"} <= changed

    metrics = train_lora_sft(tiny_model_dir, PAIRS[:10], PAIRS[10:], tmp_path, _args(method="full", learning_rate=1e-2))
    assert metrics["val_loss_after"] < metrics["val_loss_before"]
    assert (tmp_path / "model" / "config.json").is_file() and not (tmp_path / "adapter").exists()
    engine = Engine(tiny_model_dir, tmp_path / "model")
    assert engine.full_model is not None
    enc = engine._encode([engine.format(engine.prepare([{"role": "user", "content": PAIRS[0][0]}], rag=False)[0])], 8)
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).eval()
    with torch.inference_mode():
        with engine.using("base") as base:
            assert torch.equal(base(**enc).logits, plain(**enc).logits)
        with engine.using("domain") as domain:
            assert torch.equal(domain(**enc).logits, tuned(**enc).logits)
        assert not torch.allclose(tuned(**enc).logits, plain(**enc).logits, atol=1e-3)


def test_a_production_model_of_any_kind_is_evaluated_beside_base_and_domain(tiny_model_dir, tmp_path):
    """eval.production: a LoRA adapter sits beside the domain LoRA on the same weights; a prefix-tuning adapter or
    a whole model is loaded as a model of its own. Each must give the logits it gives when it is `domain` itself."""
    for name, over in {"domain": {}, "lora": {"lora_r": 2, "seed": 1}, "prefix": {"method": "prefix"}}.items():
        train_lora_sft(tiny_model_dir, PAIRS[:10], PAIRS[10:], tmp_path / name, _args(**over, epochs=1))
    engine = Engine(tiny_model_dir, tmp_path / "domain" / "adapter")
    enc = engine._encode([engine.format(engine.prepare([{"role": "user", "content": PAIRS[0][0]}], rag=False)[0])], 8)

    def logits(engine: Engine, name: str) -> torch.Tensor:
        with torch.inference_mode(), engine.using(name) as model:
            return model(**enc).logits

    expected = {name: logits(engine, name) for name in ("base", "domain")}
    for kind, folder, beside in [
        ("lora", tmp_path / "lora" / "adapter", True),
        ("prefix", tmp_path / "prefix" / "adapter", False),
        ("whole model", tiny_model_dir, False),
    ]:
        three = Engine(tiny_model_dir, tmp_path / "domain" / "adapter", production_dir=folder)
        assert three.model_names == ["base", "domain", "production"]
        alone = Engine(tiny_model_dir, folder) if folder != tiny_model_dir else Engine(tiny_model_dir)
        reference = logits(alone, "domain" if folder != tiny_model_dir else "base")
        assert torch.allclose(logits(three, "production"), reference, atol=1e-5), kind
        assert ("production" in three.model.peft_config) is beside, kind  # loaded on first use
        for name in ("base", "domain"):  # switching to production and back leaves the others as they were
            assert torch.allclose(logits(three, name), expected[name], atol=1e-5), (kind, name)
        assert not torch.allclose(logits(three, "production"), expected["domain"], atol=1e-4), kind
    with pytest.raises(HangjiaError, match="neither an adapter folder"):
        Engine(tiny_model_dir, tmp_path / "domain" / "adapter", production_dir=tmp_path)
