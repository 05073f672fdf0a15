"""GGUF export round trip on a tiny Llama: merge a LoRA adapter, write f16 and q8_0, run them in llama.cpp."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hangjia.core.errors import HangjiaError
from hangjia.llm.models import load_causal_lm, load_tokenizer
from hangjia.train import export
from hangjia.train.export import export_model, open_gguf, to_gguf, verify_gguf
from tests.paths import KESTREL_DOCS
from tests.tiny_models import build_tiny_smollm, random_lora

PROMPTS = [
    "The drain pump on the Kestrel washer",
    "Fault code E21 means",
    "Die Größe des Filters: 我想在apple工作 🚀",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    base = build_tiny_smollm(root / "base")
    adapter = random_lora(base, root / "adapter")
    summary = export_model(str(base), adapter, root / "out")
    return base, adapter, summary


def _logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_merged_model_equals_base_plus_adapter(exported):
    base, adapter, summary = exported
    ids = load_tokenizer(base)(PROMPTS[0]).input_ids
    merged = _logits(load_causal_lm(summary["merged"]["path"]), ids)
    torch.testing.assert_close(merged, _logits(load_causal_lm(base, adapter), ids), atol=1e-4, rtol=1e-4)
    assert (merged - _logits(load_causal_lm(base), ids)).abs().max() > 1.0  # measured: 2.5


def test_export_writes_both_types_and_a_summary(exported):
    import gguf

    _, _, summary = exported
    kinds = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}
    for fmt, qtype in kinds.items():
        reader = gguf.GGUFReader(summary["gguf"][fmt]["path"])
        types = {t.name: t.tensor_type for t in reader.tensors}
        assert types["blk.0.attn_q.weight"] == qtype and types["output.weight"] == qtype
        assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32  # 1-D stays f32
        assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"
        assert reader.fields["llama.attention.head_count_kv"].contents() == 2
    assert summary["gguf"]["q8_0"]["bytes"] < summary["gguf"]["f16"]["bytes"]
    assert json.loads((Path(summary["merged"]["path"]).parent / "export.json").read_text()) == summary


def test_non_llama_models_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(HangjiaError, match="LlamaForCausalLM"):
        to_gguf(tmp_path, tmp_path / "m.gguf")


def _max_logit_error(summary, gguf_path, rows):
    """Largest |llama.cpp − transformers| logit over every position of prompt + greedy continuation."""
    model = load_causal_lm(summary["merged"]["path"])
    tokenizer = load_tokenizer(summary["merged"]["path"])
    llm = open_gguf(str(gguf_path), n_ctx=256, logits_all=True, verbose=False)
    worst = 0.0
    for row in rows:
        ids = tokenizer(row["prompt"]).input_ids + row["hf_tokens"]
        llm.reset()
        llm.eval(ids)
        worst = max(worst, float(np.abs(np.asarray(llm.scores[: len(ids)]) - _logits(model, ids).numpy()).max()))
    llm.close()
    return worst


# Measured on this model (logits span ~52; greedy top-1 margins ≥ 2.4): f16 is off by ≤ 0.013,
# q8_0 by ≤ 0.35, and a GGUF written without the q/k rotary permutation by 3.2-4.0.
F16_TOLERANCE = 0.05
Q8_0_TOLERANCE = 1.0


@pytest.mark.parametrize(("fmt", "tolerance"), [("f16", F16_TOLERANCE), ("q8_0", Q8_0_TOLERANCE)])
def test_llama_cpp_greedy_tokens_match_transformers(exported, fmt, tolerance):
    pytest.importorskip("llama_cpp")
    _, _, summary = exported
    path = Path(summary["gguf"][fmt]["path"])
    _decodes_in_a_child(path)
    rows = verify_gguf(Path(summary["merged"]["path"]), path, PROMPTS, max_new_tokens=16)
    for row in rows:
        assert row["tokenizer_match"], row["prompt"]
        assert row["match"] and row["first_mismatch"] is None, row
        assert len(row["hf_tokens"]) == 16
    assert _max_logit_error(summary, path, rows) < tolerance


def _decodes_in_a_child(path: Path) -> None:
    """Decode a few tokens of `path` through `open_gguf` in a child process first, so that a native crash fails
    this test instead of taking the whole session down. With llama.cpp's default weight repacking, llama-cpp-python
    0.3.36 on an Intel Xeon with AMX dies of SIGSEGV here on the q8_0 file (ggml-org/llama.cpp#20824); `open_gguf`
    turns the repacking off."""
    code = (
        "import sys; from hangjia.train.export import open_gguf; llm = open_gguf(sys.argv[1], n_ctx=64); "
        "next(iter(llm.generate([1, 2, 3], top_k=1, temp=0.0)))"
    )
    probe = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, f"exit {probe.returncode} decoding {path.name}: {probe.stderr[-2000:]}"


def test_gguf_tokenizer_matches_transformers(exported):
    pytest.importorskip("llama_cpp")
    base, _, summary = exported
    tokenizer = load_tokenizer(base)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Wie lange dauert 1 Zyklus?"}], tokenize=False)
    texts = [*PROMPTS, chat, "  leading spaces\n\n\ttabs", "naïve café — 東京 👩‍👩‍👧"]
    llm = open_gguf(summary["gguf"]["f16"]["path"], n_ctx=256, verbose=False)
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tokenizer(text).input_ids, text
    llm.close()


def test_logit_tolerance_catches_a_missing_qk_permutation(exported, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    _, _, summary = exported
    monkeypatch.setattr(export, "_permute", lambda weights, n_head: weights)
    broken = to_gguf(Path(summary["merged"]["path"]), tmp_path / "broken.gguf", "f16")
    rows = verify_gguf(Path(summary["merged"]["path"]), broken, PROMPTS[:1], max_new_tokens=4)
    assert _max_logit_error(summary, broken, rows) > Q8_0_TOLERANCE


@pytest.mark.parametrize(
    "rope",
    [
        # Frequencies with wavelengths over 32 positions are stretched 8x, the ones under 8 kept.
        {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0},
        {"rope_type": "linear", "factor": 4.0},
    ],
)
def test_rope_scaling_round_trips(tmp_path, rope):
    """Measured over 200 positions: f16 is off by 0.008; the same GGUF without the scaling by 3.3-3.7."""
    pytest.importorskip("llama_cpp")
    rope = {"rope_theta": 100000.0, "original_max_position_embeddings": 32, **rope}
    model_dir = build_tiny_smollm(tmp_path / "model", rope)
    path = to_gguf(model_dir, tmp_path / "model.gguf", "f16")
    ids = torch.randint(100, 40000, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    llm = open_gguf(str(path), n_ctx=256, logits_all=True, verbose=False)
    llm.eval(ids)
    cpp = np.asarray(llm.scores[: len(ids)])
    llm.close()
    assert np.abs(cpp - _logits(load_causal_lm(model_dir), ids).numpy()).max() < F16_TOLERANCE


def test_hangjia_export_writes_the_domain_model_of_a_workspace(tmp_path):
    """The command end to end: data stages and one SFT step on the tiny Llama, then `hangjia export`."""
    from rich.console import Console
    from typer.testing import CliRunner

    from hangjia.cli import app
    from hangjia.core.config import ProjectConfig
    from hangjia.core.workspace import Workspace
    from hangjia.stages.ingest import ingest
    from hangjia.stages.select import select
    from hangjia.stages.synth import synth
    from hangjia.stages.train import train

    pytest.importorskip("llama_cpp")
    torch.set_num_threads(1)
    docs = tmp_path / "docs"
    docs.mkdir()
    kestrel = KESTREL_DOCS
    (docs / "faq.md").write_bytes((kestrel / "faq.md").read_bytes())
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(build_tiny_smollm(tmp_path / "base"))
    cfg.train.max_steps, cfg.train.warmup_ratio, cfg.train.target_modules = 2, 0.0, ["q_proj", "v_proj"]
    cfg.select.quality, cfg.select.general_ratio, cfg.select.raft, cfg.select.paraphrases = "none", 0.0, False, 0
    ws = Workspace(tmp_path / "ws")
    for stage in (ingest, synth, select, train):
        stage(ws, cfg, Console(quiet=True))
    (ws.root / "hangjia.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["export", "-w", str(ws.root), "--formats", "f16"])
    assert result.exit_code == 0, result.output
    counts = ws.manifest("export")["counts"]
    assert counts["f16_bytes"] > 0 and counts["f16_greedy_match"] == "3/3"  # 3 shipped prompts
    agreed, generated = map(int, counts["f16_tokens_agreed"].split("/"))
    assert agreed == generated > 3  # more than one token per prompt was compared
    prompts = ws.manifest("export")["config"]["verify_prompts"]
    assert len(prompts) == 3  # a user turn each, in the chat template, ready for the assistant's answer
    assert all("<|im_start|>user\n" in p and p.endswith("<|im_start|>assistant\n") for p in prompts)
    summary = json.loads((ws.stage_dir("export") / "export.json").read_text())
    assert summary["adapter"] == str(ws.stage_dir("train") / "adapter")
    assert not (ws.stage_dir("export") / "model-q8_0.gguf").exists()
    manifest = (ws.stage_dir("export") / "manifest.json").read_text()
    again = CliRunner().invoke(app, ["export", "-w", str(ws.root), "--formats", "f16"])
    assert again.exit_code == 0 and (ws.stage_dir("export") / "manifest.json").read_text() == manifest  # skipped
