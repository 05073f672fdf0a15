"""q4_0 and q4_k_m GGUF files: llama.cpp's quantizer run on the f16 file the export writes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import get_args

import gguf
import pytest

from hangjia.core.config import GgufType
from hangjia.core.errors import HangjiaError
from hangjia.train.export import GGUF_TYPES, export_model, gguf_tensor_types, open_gguf, verify_gguf, write_gguf

pytest.importorskip("llama_cpp")

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def exported(tiny_smollm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export-q4")
    return export_model(str(tiny_smollm_dir), None, out, formats=("q4_0", "f16", "q4_k_m"))


def test_q4_files_are_quantized_from_the_f16_file(exported):
    files = exported["gguf"]
    assert list(files) == ["q4_0", "f16", "q4_k_m"]
    # (Counted by gguf_tensor_types, which the last test holds against gguf.GGUFReader.) 7 matrices a layer and
    # token_embd in q4_0, the 5 norms f32, output q8_0: its q6_K needs rows of 256 values.
    assert files["q4_0"]["tensor_types"] == {"Q4_0": 15, "F32": 5, "Q8_0": 1}
    # The 64-wide rows are no multiple of the 256-value k-quant block: llama.cpp falls back per tensor, q4_K to
    # q5_0 and q6_K (output, and attn_v and ffn_down of the last layer) to q8_0; the summary says so.
    assert files["q4_k_m"]["tensor_types"] == {"Q5_0": 13, "F32": 5, "Q8_0": 3}
    assert files["f16"]["tensor_types"] == {"F16": 16, "F32": 5}
    assert files["q4_0"]["bytes"] < files["q4_k_m"]["bytes"] < files["f16"]["bytes"]
    out = Path(files["f16"]["path"]).parent
    assert sorted(p.name for p in out.glob("*.gguf")) == ["model-f16.gguf", "model-q4_0.gguf", "model-q4_k_m.gguf"]
    assert not list(out.glob(".f16-*"))  # the temporary f16 folder is gone


def test_q4_0_decodes_the_tiny_models_greedy_chain(exported):
    """The tiny model's greedy output is a bigram chain with top-1 margins of 2.4+ logits, which 4-bit weights keep
    (measured: q4_0 and q4_k_m agree on 3 of 3 prompts x 16 tokens). SmolLM2-135M's q4 files part from
    transformers sooner; export counts the agreeing tokens rather than failing (benchmarks/README.md)."""
    merged = Path(exported["merged"]["path"])
    prompts = ["The drain pump on the Kestrel washer", "Fault code E21 means"]
    rows = verify_gguf(merged, Path(exported["gguf"]["q4_0"]["path"]), prompts, max_new_tokens=8)
    for row in rows:
        assert row["tokenizer_match"] and row["match"], row
        assert len(row["gguf_tokens"]) == 8


def test_write_gguf_writes_real_q4_k_where_rows_fit_the_block(tiny_smollm_dir, tmp_path):
    """The tiny model widened to 256 (one layer, tied embeddings): llama.cpp's q4_k_m mix, q6_K for the output
    (token_embd), attn_v and ffn_down, q4_K for the rest."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_smollm_dir)
    config.hidden_size, config.intermediate_size, config.head_dim = 256, 512, 64
    config.num_hidden_layers, config.tie_word_embeddings = 1, True
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    AutoTokenizer.from_pretrained(tiny_smollm_dir).save_pretrained(tmp_path / "model")
    path = write_gguf(tmp_path / "model", tmp_path / "out" / "model.gguf", "q4_k_m", name="wide")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == Q.Q4_K and types["token_embd.weight"] == Q.Q6_K
    # gguf_tensor_types walks the header only; it counts what GGUFReader reads.
    assert gguf_tensor_types(path) == {"Q4_K": 5, "F32": 3, "Q6_K": 3} == Counter(t.name for t in types.values())
    assert reader.fields["general.name"].contents() == "wide"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model.gguf"]
    llm = open_gguf(path, n_ctx=64)
    assert 0 <= next(iter(llm.generate(llm.tokenize(b"Hello there"), top_k=1, temp=0.0))) < llm.n_vocab()
    llm.close()


def test_unknown_types_are_refused_before_any_work(tmp_path):
    assert get_args(GgufType) == GGUF_TYPES == ("f16", "q8_0", "q4_0", "q4_k_m")  # serve.gguf names what export writes
    with pytest.raises(HangjiaError, match="'q5_0' is not supported; choose from f16, q8_0, q4_0, q4_k_m"):
        export_model("no-such-model", None, tmp_path / "out", formats=("f16", "q5_0"))
    with pytest.raises(HangjiaError, match="No GGUF type given"):
        export_model("no-such-model", None, tmp_path / "out", formats=())
    with pytest.raises(HangjiaError, match="'Q4_0' is not supported"):
        write_gguf(tmp_path, tmp_path / "m.gguf", "Q4_0")
    assert not (tmp_path / "out").exists()
