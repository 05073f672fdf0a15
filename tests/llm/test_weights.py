"""The one resolver of model names: what `base`, `domain` and `production` mean as training stages come and go."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace
from hangjia.llm.weights import checked_model_folder, domain_weights, production_weights, resolve, trained_weights


def _base(tmp_path: Path) -> Path:
    base = tmp_path / "base-model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    return base


def _adapter(folder: Path, peft_type: str = "LORA") -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type}))


def _train(ws: Workspace, base: Path, *, full: bool = False, peft_type: str = "LORA", seed: int = 0) -> None:
    with ws.stage("train", {"select": f"run-{seed}"}, {"base_model": str(base), "seed": seed}) as run:
        if full:
            (run.dir / "model").mkdir()
            (run.dir / "model" / "config.json").write_text("{}")
        else:
            _adapter(run.dir / "adapter", peft_type)


def _dpo(ws: Workspace) -> None:
    with ws.stage("dpo", {"train": ws.manifest("train")["fingerprint"]}, {}) as run:
        _adapter(run.dir / "adapter")


def test_before_training_domain_has_no_tuned_weights_and_base_is_the_configured_model(tmp_path):
    base, ws = _base(tmp_path), Workspace(tmp_path / "ws")
    domain = domain_weights(ws, str(base))
    assert domain.tuned is None and domain.base_dir == base.resolve()
    assert resolve(ws, "base", str(base)).kind == "base model"


def test_domain_follows_train_then_dpo_then_a_retrain(tmp_path):
    base, ws = _base(tmp_path), Workspace(tmp_path / "ws")
    _train(ws, base)
    domain = domain_weights(ws, "embedded")  # the trained model's own base wins over the configured one
    assert (domain.tuned, domain.stage, domain.kind) == (ws.stage_dir("train") / "adapter", "train", "LoRA adapter")
    assert domain.base_dir == base.resolve()

    _dpo(ws)
    domain = domain_weights(ws, str(base))
    assert (domain.tuned, domain.stage) == (ws.stage_dir("dpo") / "adapter", "dpo")
    assert trained_weights(ws).tuned == ws.stage_dir("train") / "adapter"  # what DPO started from

    _train(ws, base, seed=1)  # a new SFT output: the DPO adapter was made on the old one
    assert domain_weights(ws, str(base)).stage == "train"


def test_full_fine_tuning_and_prompt_learning_are_told_apart(tmp_path):
    base = _base(tmp_path)
    ws = Workspace(tmp_path / "full")
    _train(ws, base, full=True)
    domain = domain_weights(ws, str(base))
    assert domain.is_full_model and not domain.is_adapter and domain.kind == "full model"
    assert domain.tuned == ws.stage_dir("train") / "model"

    ws = Workspace(tmp_path / "prefix")
    _train(ws, base, peft_type="PREFIX_TUNING")
    assert domain_weights(ws, str(base)).kind == "prefix-tuning adapter"


def test_production_is_checked_and_unknown_names_are_404(tmp_path):
    base, ws = _base(tmp_path), Workspace(tmp_path / "ws")
    with pytest.raises(HangjiaError, match="neither an adapter folder"):
        checked_model_folder(tmp_path)
    _adapter(tmp_path / "kept")
    production = production_weights(ws, str(base), tmp_path / "kept")
    assert (production.name, production.kind, production.base_dir) == ("production", "LoRA adapter", base.resolve())
    with pytest.raises(HangjiaError, match="Unknown model 'production'") as err:
        resolve(ws, "production", str(base))
    assert err.value.status_code == 404
