"""The pretrain, dpo and reward stages wired into the workspace, with a tiny random model as the base."""

import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from hangjia.cli import app
from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace
from hangjia.llm.generation import Engine
from hangjia.stages.ingest import ingest
from hangjia.stages.preference import dpo
from hangjia.stages.pretrain import pretrain
from hangjia.stages.select import select
from hangjia.stages.synth import synth
from hangjia.stages.train import train
from tests.paths import KESTREL_DOCS

QUIET = Console(quiet=True)


@pytest.fixture
def cfg(tiny_model_dir, tmp_path):
    torch.set_num_threads(1)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("dishwasher_error_codes.md", "spare_parts_prices.csv", "warranty_policy.md"):
        (docs / name).write_bytes((KESTREL_DOCS / name).read_bytes())
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(tiny_model_dir)
    cfg.train.max_steps = 1
    cfg.select.quality, cfg.select.general_ratio, cfg.select.raft, cfg.select.paraphrases = "none", 0.0, False, 0
    cfg.pretrain.base_model = str(tiny_model_dir)
    cfg.pretrain.max_steps, cfg.pretrain.block_size, cfg.pretrain.val_fraction = 2, 64, 0.34
    cfg.preference.max_steps, cfg.preference.batch_size, cfg.preference.max_length = 2, 2, 128
    cfg.eval.max_new_tokens = 8
    return cfg


def _data_stages(ws: Workspace, cfg: ProjectConfig) -> None:
    for stage in (ingest, synth, select):
        stage(ws, cfg, QUIET)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


def test_pretrain_writes_a_model_that_sft_starts_from(cfg, tmp_path):
    replay = tmp_path / "general.jsonl"
    replay.write_text(
        "".join(json.dumps({"text": f"General sentence number {i} about rivers."}) + "\n" for i in range(40))
    )
    cfg.pretrain.replay = [replay]
    ws = Workspace(tmp_path / "ws")
    ingest(ws, cfg, QUIET)
    result = pretrain(ws, cfg, QUIET)
    counts = ws.manifest("pretrain")["counts"]
    assert not result["skipped"] and counts["steps"] == 2 and counts["replay_blocks"] > 0
    assert counts["val_perplexity_before"] > 1 and counts["val_perplexity_after"] > 1
    model = ws.stage_dir("pretrain") / "model"
    assert (model / "config.json").is_file() and (model / "tokenizer_config.json").is_file()
    # The merged model is the base plus the LoRA update: its weights moved, its shapes did not.
    merged, base = load_file(model / "model.safetensors"), load_file(Path(cfg.train.base_model) / "model.safetensors")
    moved = [k for k in base if not torch.equal(base[k], merged[k])]
    assert moved and all(base[k].shape == merged[k].shape for k in base)
    assert pretrain(ws, cfg, QUIET)["skipped"]

    cfg.train.base_model = "pretrain"
    synth(ws, cfg, QUIET)
    select(ws, cfg, QUIET)
    train(ws, cfg, QUIET)
    assert ws.manifest("train")["inputs"]["pretrain"] == ws.manifest("pretrain")["fingerprint"]
    engine = Engine.from_workspace(ws, "embedded")
    assert engine.base_dir == model.resolve()


def test_train_on_pretrain_without_it_says_what_to_run(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    _data_stages(ws, cfg)
    cfg.train.base_model = "pretrain"
    with pytest.raises(HangjiaError, match="hangjia pretrain"):
        train(ws, cfg, QUIET)


def test_dpo_from_the_models_own_wrong_answers_becomes_domain_until_sft_reruns(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    _data_stages(ws, cfg)
    train(ws, cfg, QUIET)
    cfg.preference.max_pairs = 12
    dpo(ws, cfg, QUIET)
    counts = ws.manifest("dpo")["counts"]
    assert counts["origin"] == "made from the train split" and counts["pairs"] + counts["val_pairs"] == 12
    made = [json.loads(line) for line in (ws.stage_dir("dpo") / "preferences.jsonl").read_text().splitlines()]
    gold = {json.loads(line)["answer"] for line in (ws.stage_dir("select") / "train.jsonl").read_text().splitlines()}
    assert all(p["chosen"] in gold and p["rejected"] != p["chosen"] for p in made)
    sft, tuned = _weights(ws.stage_dir("train") / "adapter"), _weights(ws.stage_dir("dpo") / "adapter")
    assert sft.keys() == tuned.keys() and any(not torch.equal(sft[k], tuned[k]) for k in sft)
    assert Engine.from_workspace(ws, "embedded").adapter_dir == ws.stage_dir("dpo") / "adapter"
    # A new SFT adapter makes the DPO one stale: domain goes back to SFT until dpo runs again.
    cfg.train.max_steps = 2
    train(ws, cfg, QUIET)
    assert Engine.from_workspace(ws, "embedded").adapter_dir == ws.stage_dir("train") / "adapter"
    assert not dpo(ws, cfg, QUIET)["skipped"]


def test_reward_from_a_file_through_the_cli(cfg, tmp_path):
    ws = Workspace(tmp_path / "ws")
    _data_stages(ws, cfg)
    train(ws, cfg, QUIET)
    prefs = tmp_path / "prefs.jsonl"
    rows = [
        {
            "question": f"What does code E{i:02d} mean?",
            "chosen": f"Fault {i}: drain pump blocked.",
            "rejected": "No idea.",
        }
        for i in range(12)
    ]
    rows.append({"question": "Same?", "chosen": "x", "rejected": "x"})  # no preference: skipped
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ws.root / "hangjia.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))  # YAML is a superset of JSON
    result = CliRunner().invoke(app, ["reward", "-w", str(ws.root), "--preferences", str(prefs)])
    assert result.exit_code == 0, result.output
    counts = ws.manifest("reward")["counts"]
    assert counts["origin"] == "file" and counts["pairs"] == 11 and counts["val_pairs"] == 1
    assert (ws.stage_dir("reward") / "reward_model" / "adapter_config.json").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    result = CliRunner().invoke(app, ["reward", "-w", str(ws.root), "--preferences", str(bad)])
    assert isinstance(result.exception, HangjiaError) and '"chosen"' in str(result.exception)
