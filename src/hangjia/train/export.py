"""Export a trained adapter: merge it into the base, then write GGUF files llama.cpp can run.

    base + adapter ──merge_adapter──▶ merged/ (fp32 safetensors + tokenizer)
                   ──to_gguf───────▶ model-f16.gguf, model-q8_0.gguf
                   ──quantize_gguf─▶ model-q4_0.gguf, model-q4_k_m.gguf (llama.cpp's quantizer, from the f16 file)
                   ──verify_gguf───▶ greedy tokens of llama.cpp == greedy tokens of transformers?

The GGUF writer is llama.cpp's `convert_hf_to_gguf.py` (its LlamaModel and TextModel paths)
redone for Llama only on the `gguf` package's public API. The one PyPI package that ships that
script (`convert-hf-to-gguf`) vendors its own top-level `gguf` package, which would overwrite
the `gguf` we depend on, so we do not install it.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from hangjia.core.config import GgufType
from hangjia.core.errors import HangjiaError
from hangjia.llm.gguf_header import read_gguf_header
from hangjia.llm.models import load_causal_lm, load_tokenizer, resolve_base

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

GGUF_TYPES: tuple[str, ...] = get_args(GgufType)  # f16, q8_0, q4_0, q4_k_m: what serve.gguf may name
# Written by llama.cpp's own quantizer from an f16 GGUF (its llama_ftype names); f16 and q8_0 are written by to_gguf.
_LLAMA_FTYPES = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}

# llama.cpp picks the pre-tokenizer (the regex that splits text before BPE) by hashing the ids
# of this text; text and hashes are copied from convert_hf_to_gguf.py's get_vocab_base_pre.
_PRE_TOKENIZER_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 "
    "?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
}


def merge_adapter(base_dir: Path, adapter_dir: Path | None, out_dir: Path) -> Path:
    """Fold a LoRA adapter into the base weights (PEFT `merge_and_unload`) and save fp32
    safetensors plus the tokenizer (the adapter's copy if it has one) into `out_dir`.

    Without an adapter the base is copied through the same path, so every export has one layout.
    """
    _require_llama(base_dir)
    model = load_causal_lm(base_dir, adapter_dir)
    if adapter_dir is not None:
        model = model.merge_and_unload()
    tok_dir = adapter_dir if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file() else base_dir
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    load_tokenizer(tok_dir).save_pretrained(out_dir)
    return out_dir


def check_gguf_types(types: tuple[str, ...] | list[str]) -> None:
    """Raise a HangjiaError naming the supported types unless `types` is a non-empty list of them."""
    unknown = [t for t in types if t not in GGUF_TYPES]
    if unknown or not types:
        what = f"GGUF type '{unknown[0]}' is not supported" if unknown else "No GGUF type given"
        raise HangjiaError(f"{what}; choose from {', '.join(GGUF_TYPES)}.")


def write_gguf(hf_dir: Path, out_path: Path, gguf_type: str, name: str | None = None) -> Path:
    """Write the Llama model in `hf_dir` as the GGUF file `out_path` of any type in GGUF_TYPES: f16 and q8_0 by
    `to_gguf`, q4_0 and q4_k_m by llama.cpp's quantizer from an f16 file written to a temporary file beside it."""
    check_gguf_types([gguf_type])
    if gguf_type not in _LLAMA_FTYPES:
        return to_gguf(hf_dir, out_path, gguf_type, name=name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".f16-") as tmp:
        f16 = to_gguf(hf_dir, Path(tmp) / "model-f16.gguf", "f16", name=name)
        return quantize_gguf(f16, out_path, gguf_type)


def quantize_gguf(f16_path: Path, out_path: Path, gguf_type: str, threads: int = 0) -> Path:
    """Quantize the f16 GGUF `f16_path` to `gguf_type` ("q4_0" or "q4_k_m") with llama.cpp's quantizer
    (`llama_model_quantize`, as the `llama-quantize` tool; `threads` 0 = all cores).

    llama.cpp keeps 1-D tensors f32 and picks each tensor's type itself: q4_0 puts the output matrix (token_embd
    when tied) in q6_K; q4_k_m puts it, and about half the ffn_down and attn_v tensors, in q6_K, the rest in q4_K.
    A tensor whose rows are not a multiple of the 256-value k-quant block falls back to q5_0 (for q4_K) or q8_0
    (for q6_K), one whose rows are not a multiple of 32 to f16, so the quantizer refuses no shape. SmolLM2-135M
    is 576 wide: its q4_k_m is mostly q5_0 (6.2 bits per weight, q4_0 5.3); `gguf_tensor_types` tells what a
    file holds.
    """
    if gguf_type not in _LLAMA_FTYPES:
        raise HangjiaError(f"llama.cpp's quantizer writes {', '.join(_LLAMA_FTYPES)}, not '{gguf_type}'.")
    try:
        import llama_cpp
        from llama_cpp import _logger
    except ImportError as err:
        raise HangjiaError(
            f"Writing {gguf_type} GGUF files needs llama-cpp-python: `pip install -e '.[export]'`."
        ) from err
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _LLAMA_FTYPES[gguf_type])
    params.nthread = threads
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log: list[str] = []  # llama.cpp logs a line per tensor (and every fallback as a warning): kept, not printed

    @llama_cpp.llama_log_callback
    def keep(level: int, text: bytes, user_data: Any) -> None:
        log.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        failed = llama_cpp.llama_model_quantize(str(f16_path).encode(), str(out_path).encode(), params)
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))  # llama-cpp-python's own
    if failed:
        out_path.unlink(missing_ok=True)
        tail = "".join(log).strip().splitlines()[-3:]
        raise HangjiaError(f"llama.cpp could not quantize {f16_path} to {gguf_type}: {' '.join(tail) or failed}")
    return out_path


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each type (F32, F16, Q8_0, Q4_K, ...) the GGUF file `path` holds, most common first."""
    return read_gguf_header(path).tensor_types


def to_gguf(hf_dir: Path, out_path: Path, outtype: str = "f16", name: str | None = None) -> Path:
    """Write the Llama model in `hf_dir` as one GGUF file of type `outtype` ("f16" or "q8_0"; `write_gguf`
    writes the q4 types too).

    As llama.cpp's converter does: q/k weights get the rotary permutation llama.cpp expects,
    1-D tensors (norms) stay f32, and q8_0 falls back to f16 for a tensor whose rows are not a
    multiple of 32.
    """
    import gguf
    from safetensors import safe_open

    if outtype not in ("f16", "q8_0"):
        raise HangjiaError(f"to_gguf writes f16 or q8_0, not '{outtype}'; write_gguf writes {', '.join(GGUF_TYPES)}.")
    config = _require_llama(hf_dir)
    shards = sorted(hf_dir.glob("*.safetensors"))
    if not shards:
        raise HangjiaError(f"{hf_dir} has no *.safetensors weights; save the model with safetensors and retry.")

    n_layers = config["num_hidden_layers"]
    n_head = config["num_attention_heads"]
    n_head_kv = config.get("num_key_value_heads") or n_head
    qtype = gguf.GGMLQuantizationType.F16 if outtype == "f16" else gguf.GGMLQuantizationType.Q8_0
    ftype = gguf.LlamaFileType.MOSTLY_F16 if outtype == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    tensor_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out_path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or hf_dir.name)
    _add_hparams(writer, config, ftype)
    _add_vocab(writer, hf_dir, config["vocab_size"])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    for tensor_name, data in _rope_factors(config):
        writer.add_tensor(tensor_name, data, raw_dtype=gguf.GGMLQuantizationType.F32)
    for shard in shards:
        with safe_open(shard, framework="pt") as f:
            for hf_name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if hf_name.endswith(".rotary_emb.inv_freq"):
                    continue
                if hf_name == "lm_head.weight" and config.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd when there is no output tensor
                data = f.get_tensor(hf_name).float().numpy()
                if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                    data = _permute(data, n_head)
                elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                    data = _permute(data, n_head_kv)
                new_name = tensor_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if new_name is None:
                    raise HangjiaError(f"Tensor '{hf_name}' in {shard} has no GGUF name; is this a plain Llama model?")
                data, dtype = _encode(data, qtype if data.ndim >= 2 else gguf.GGMLQuantizationType.F32)
                writer.add_tensor(new_name, data, raw_dtype=dtype)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def open_gguf(path: Path, **kwargs: Any) -> Any:
    """A `llama_cpp.Llama` on the GGUF file `path` (keyword arguments go to it; verbose off unless given), with
    llama.cpp's weight repacking into extra buffer types off: on Intel Xeons with AMX, llama.cpp repacks q8_0
    weights for its AMX kernel, whose matmul dies of SIGSEGV on the first decode (ggml-org/llama.cpp#20824; seen
    with llama-cpp-python 0.3.36 on a Xeon with AMX, f16 unaffected). The plain CPU kernels compute the same
    quantized product. llama-cpp-python has no argument for the model parameter `use_extra_bufts`, so its default
    parameters are replaced while the model loads."""
    try:
        import llama_cpp
        from llama_cpp import llama as llama_module
    except ImportError as err:
        raise HangjiaError("Reading GGUF files needs llama-cpp-python: `pip install -e '.[export]'`.") from err

    defaults = llama_module.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(model_path=str(path), **{"verbose": False, **kwargs})
    finally:
        llama_module.llama_cpp.llama_model_default_params = defaults


def verify_gguf(
    hf_dir: Path, gguf_path: Path, prompts: list[str], max_new_tokens: int = 32, n_ctx: int = 512
) -> list[dict[str, Any]]:
    """Greedy-decode each prompt with transformers and with llama.cpp from the same prompt ids.

    Returns one row per prompt: the two token lists, `match`, `first_mismatch` (index of the first
    differing new token, or None), and `tokenizer_match` (whether the GGUF's own tokenizer turns
    the prompt into the same ids as the Hugging Face one). On SmolLM2-135M, f16 matched 5/5 prompts
    over 32 tokens; q8_0 (logits off by up to ~2.4) parted at near-ties (top-2 gaps ≤ 0.23) after
    5-25 tokens; q4_0 after 5 tokens on average, q4_k_m after 11 (benchmarks/README.md, gguf_types).
    Needs the `export` extra (llama-cpp-python).
    """
    import torch

    tokenizer = load_tokenizer(hf_dir)
    model = load_causal_lm(hf_dir)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    llm = open_gguf(gguf_path, n_ctx=n_ctx)
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt).input_ids
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                repetition_penalty=1.0,
                pad_token_id=tokenizer.pad_token_id,
            )
        hf_tokens = out[0, len(ids) :].tolist()
        gguf_tokens = llama_greedy(llm, ids, max_new_tokens, eos_ids)
        # add_bos=True means "add BOS if the GGUF says so"; special=True parses "<|im_start|>" as HF does.
        gguf_ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
        rows.append(
            {
                "prompt": prompt,
                "hf_tokens": hf_tokens,
                "gguf_tokens": gguf_tokens,
                "match": hf_tokens == gguf_tokens,
                "first_mismatch": next(
                    (i for i, (a, b) in enumerate(zip(hf_tokens, gguf_tokens, strict=False)) if a != b),
                    None if len(hf_tokens) == len(gguf_tokens) else min(len(hf_tokens), len(gguf_tokens)),
                ),
                "tokenizer_match": gguf_ids == ids,
            }
        )
    llm.close()
    return rows


def llama_greedy(llm: Any, ids: list[int], max_new_tokens: int, stop_ids: set[int]) -> list[int]:
    """Greedy continuation of prompt `ids` with a llama_cpp.Llama, stopping after a stop id."""
    tokens: list[int] = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        tokens.append(token)
        if token in stop_ids or len(tokens) >= max_new_tokens:
            break
    return tokens


def export_model(
    base_spec: str,
    adapter_dir: Path | None,
    out_dir: Path,
    formats: tuple[str, ...] = ("f16", "q8_0"),
    verify_prompts: list[str] | None = None,
    max_new_tokens: int = 32,
) -> dict[str, Any]:
    """Merge `adapter_dir` into the base `base_spec` and write one GGUF file per format (any of GGUF_TYPES; the q4
    types are quantized from the f16 file, written to a temporary file when f16 is not wanted).

    Layout: `out_dir/merged/`, `out_dir/model-<format>.gguf`, and `out_dir/export.json` (the
    summary returned here: paths, sizes in bytes, tensor types and, with `verify_prompts`, the per-prompt
    comparison of llama.cpp's greedy tokens with transformers'). Disagreeing tokens are reported, not raised:
    a 4-bit file parts from transformers sooner than f16 does.
    """
    out_dir = Path(out_dir)
    adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
    check_gguf_types(formats)
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise HangjiaError(
            f"{adapter_dir} has no adapter_config.json; point at the `adapter` folder a training run wrote."
        )
    base_dir = resolve_base(base_spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = merge_adapter(base_dir, adapter_dir, out_dir / "merged")
    name = base_dir.name if adapter_dir is None else f"{base_dir.name}-{out_dir.name}"
    summary: dict[str, Any] = {
        "base": str(base_dir),
        "adapter": str(adapter_dir) if adapter_dir is not None else None,
        "merged": {"path": str(merged), "bytes": _size(merged)},
        "gguf": {},
    }
    paths = {fmt: out_dir / f"model-{fmt}.gguf" for fmt in formats}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".f16-") as tmp:
        f16 = paths.get("f16", Path(tmp) / "model-f16.gguf")
        if "f16" in formats or any(fmt in _LLAMA_FTYPES for fmt in formats):
            to_gguf(merged, f16, "f16", name=name)
        for fmt in formats:
            if fmt == "q8_0":
                to_gguf(merged, paths[fmt], fmt, name=name)
            elif fmt in _LLAMA_FTYPES:
                quantize_gguf(f16, paths[fmt], fmt)
    for fmt, path in paths.items():
        summary["gguf"][fmt] = {
            "path": str(path),
            "bytes": path.stat().st_size,
            "tensor_types": gguf_tensor_types(path),
        }
    if verify_prompts:
        summary["verify"] = {fmt: verify_gguf(merged, paths[fmt], verify_prompts, max_new_tokens) for fmt in formats}
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def _require_llama(model_dir: Path) -> dict[str, Any]:
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise HangjiaError(f"{model_dir} has no config.json; point at a Hugging Face model folder.")
    config = json.loads(config_file.read_text())
    archs = config.get("architectures") or []
    if config.get("model_type") != "llama" or archs != ["LlamaForCausalLM"]:
        raise HangjiaError(
            f"{model_dir} is a {', '.join(archs) or config.get('model_type')} model; "
            "the GGUF export supports Llama-architecture models (LlamaForCausalLM) only."
        )
    return config


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    # transformers 5 writes `rope_parameters`; older configs `rope_theta` + `rope_scaling`.
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = rope.get("rope_type") or rope.get("type") or "default"
    if rope["rope_type"] not in ("default", "linear", "llama3"):
        raise HangjiaError(
            f"RoPE scaling '{rope['rope_type']}' is not supported by the GGUF export (default, linear, llama3 are)."
        )
    return rope


def _head_dim(config: dict[str, Any]) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _add_hparams(writer: Any, config: dict[str, Any], ftype: int) -> None:
    import gguf

    rope = _rope(config)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_freq_base(rope["rope_theta"])
    if rope["rope_type"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if config.get("head_dim"):
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    writer.add_file_type(ftype)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(_head_dim(config))


def _rope_factors(config: dict[str, Any]) -> list[tuple[str, np.ndarray]]:
    """Llama 3.1+ RoPE: per-frequency factors stored as the `rope_freqs` tensor (as llama.cpp does)."""
    rope = _rope(config)
    if rope["rope_type"] != "llama3":
        return []
    dim = _head_dim(config)
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            factors.append(1.0)
        elif wavelen > old_ctx / low:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return [("rope_freqs.weight", np.array(factors, dtype=np.float32))]


def _permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half q/k layout → the interleaved pairs llama.cpp's RoPE expects."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _encode(data: np.ndarray, qtype: Any) -> tuple[np.ndarray, Any]:
    import gguf

    try:
        return gguf.quants.quantize(data, qtype), qtype
    except gguf.QuantError:  # rows not a multiple of the 32-value q8_0 block
        return gguf.quants.quantize(data, gguf.GGMLQuantizationType.F16), gguf.GGMLQuantizationType.F16


def _add_vocab(writer: Any, hf_dir: Path, vocab_size: int) -> None:
    """Byte-level BPE vocab ("gpt2" in GGUF terms), as convert_hf_to_gguf's _set_vocab_gpt2."""
    import gguf

    if not (hf_dir / "tokenizer.json").is_file():
        raise HangjiaError(
            f"{hf_dir} has no tokenizer.json; the GGUF export supports byte-level BPE tokenizers only "
            "(SmolLM, Llama 3), not SentencePiece ones."
        )
    tokenizer = load_tokenizer(hf_dir)
    tokens, toktypes = _vocab_tokens(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tokenizer, hf_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(toktypes)
    special = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=vocab_size)
    # Whether to add BOS/EOS is what the HF tokenizer does, not what its config files may claim.
    probe = tokenizer("a").input_ids
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and probe[-1] == tokenizer.eos_token_id
    special.add_to_gguf(writer, quiet=True)


def _vocab_tokens(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, toktypes = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            looks_special = by_id[i].startswith("<|") and by_id[i].endswith("|>")
            special = added[i].special or looks_special
            toktypes.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            toktypes.append(gguf.TokenType.NORMAL)
    return tokens, toktypes


def _pre_tokenizer(tokenizer: PreTrainedTokenizerBase, hf_dir: Path) -> str:
    digest = hashlib.sha256(str(tokenizer.encode(_PRE_TOKENIZER_TEXT)).encode()).hexdigest()
    if digest not in _PRE_TOKENIZERS:
        raise HangjiaError(
            f"The tokenizer in {hf_dir} splits text in a way the GGUF export does not know (hash {digest[:12]}…); "
            f"supported tokenizers: {', '.join(sorted(set(_PRE_TOKENIZERS.values())))}."
        )
    return _PRE_TOKENIZERS[digest]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
