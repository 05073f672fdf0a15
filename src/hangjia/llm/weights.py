"""Which weights a model name means: the one resolver of `base`, `domain`, `production` and named versions.

    base        the base model the workspace's model was trained from (train's own base_model once it has run,
                else the configured one): `embedded`, `pretrain` or a local Hugging Face folder, as a folder
    domain      what `hangjia train` wrote (a PEFT adapter, or a whole model with train.method: full), or the DPO
                adapter when `hangjia dpo` ran on that very SFT output
    production  the model in service now, given as a folder (eval.production): an adapter or a whole model
    (versions)  other names a server serves (serve.versions): an adapter, a whole model or a GGUF file

The engine, `hangjia models`, export, eval and the preference stages all ask here, so they cannot disagree.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace
from hangjia.llm.models import resolve_base

BASE, DOMAIN, PRODUCTION = "base", "domain", "production"

# PEFT's peft_type → what a person calls it.
_ADAPTER_KINDS = {"LORA": "LoRA adapter", "PREFIX_TUNING": "prefix-tuning adapter", "P_TUNING": "P-tuning adapter"}
FULL_MODEL = "full model"
GGUF_MODEL = "GGUF model"


@dataclass(frozen=True)
class ModelWeights:
    """A model name resolved: the base folder, and what is put on it (nothing for `base`)."""

    name: str
    base_dir: Path
    """The base model folder (what an adapter attaches to)."""
    tuned: Path | None = None
    """An adapter folder, a whole model folder (train.method: full) or a GGUF file; None for the base model itself."""
    stage: str | None = None
    """The workspace stage that wrote `tuned` (train, dpo); None when given from outside or for the base model."""

    @property
    def is_adapter(self) -> bool:
        return self.tuned is not None and is_adapter(self.tuned)

    @property
    def is_full_model(self) -> bool:
        return self.tuned is not None and not self.is_adapter

    @property
    def peft_type(self) -> str | None:
        """LORA, PREFIX_TUNING, P_TUNING, ... for an adapter; None otherwise."""
        return adapter_type(self.tuned) if self.is_adapter else None

    @property
    def kind(self) -> str:
        """In words: base model, LoRA adapter, prefix-tuning adapter, P-tuning adapter, full model or GGUF model."""
        if self.tuned is None:
            return "base model"
        if is_gguf(self.tuned):
            return GGUF_MODEL
        if self.is_full_model:
            return FULL_MODEL
        return _ADAPTER_KINDS.get(self.peft_type or "", f"{self.peft_type} adapter")

    @property
    def folder(self) -> Path:
        """The folder that holds this model's own weights."""
        return self.tuned if self.tuned is not None else self.base_dir


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def is_gguf(path: Path) -> bool:
    return Path(path).suffix == ".gguf"


def adapter_type(path: Path) -> str | None:
    """The PEFT type an adapter folder holds (LORA, PREFIX_TUNING, ...)."""
    return json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")


def base_weights(ws: Workspace, base_model: str) -> ModelWeights:
    """`base`: the base of the trained model when train has run (so the pair matches), else `base_model`."""
    train = ws.manifest("train")
    spec = train["config"]["base_model"] if train else base_model
    return ModelWeights(BASE, resolve_base(spec, ws.root))


def trained_weights(ws: Workspace) -> ModelWeights:
    """What `hangjia train` wrote: the SFT adapter, or the whole model with train.method: full."""
    train = ws.require("train", "`hangjia train`")
    full = ws.stage_dir("train") / "model"
    tuned = full if full.is_dir() else ws.stage_dir("train") / "adapter"
    return ModelWeights(DOMAIN, resolve_base(train["config"]["base_model"], ws.root), tuned, "train")


def domain_weights(ws: Workspace, base_model: str) -> ModelWeights:
    """`domain`: the DPO adapter when `hangjia dpo` ran on the current SFT output, else that SFT output; before any
    training, no tuned weights (`tuned` is None)."""
    train = ws.manifest("train")
    if not train:
        return ModelWeights(DOMAIN, base_weights(ws, base_model).base_dir)
    sft = trained_weights(ws)
    dpo = ws.manifest("dpo")
    if dpo and dpo.get("inputs", {}).get("train") == train["fingerprint"]:
        return ModelWeights(DOMAIN, sft.base_dir, ws.stage_dir("dpo") / "adapter", "dpo")
    return sft


def checked_model_folder(path: Path) -> Path:
    """`path`, when it holds a PEFT adapter (adapter_config.json) or a whole model (config.json)."""
    path = Path(path)
    if not (path / "config.json").is_file() and not is_adapter(path):
        raise HangjiaError(
            f"The production model {path} is neither an adapter folder (adapter_config.json) nor a model folder "
            "(config.json); point eval.production at a copy of the train/adapter (or train/model) in service."
        )
    return path


def checked_version(name: str, path: Path) -> Path:
    """`path` of serve.versions' `name`, when it is a PEFT adapter folder, a whole model folder or a GGUF file."""
    path = Path(path)
    if (is_gguf(path) and path.is_file()) or (path / "config.json").is_file() or is_adapter(path):
        return path
    raise HangjiaError(
        f"serve.versions.{name} is {path}, which is neither a PEFT adapter folder (adapter_config.json), a model "
        "folder (config.json) nor a .gguf file; point it at one of those."
    )


def production_weights(ws: Workspace, base_model: str, folder: Path) -> ModelWeights:
    """`production`: the model in service, an adapter (on the workspace's base) or a whole model folder."""
    path = checked_model_folder(Path(folder).expanduser().resolve())
    return ModelWeights(PRODUCTION, base_weights(ws, base_model).base_dir, path)


def resolve(ws: Workspace, name: str, base_model: str, production: Path | None = None) -> ModelWeights:
    """The weights `name` means in this workspace: base, domain or (when a folder is given) production."""
    if name == BASE:
        return base_weights(ws, base_model)
    if name == DOMAIN:
        return domain_weights(ws, base_model)
    if name == PRODUCTION and production is not None:
        return production_weights(ws, base_model, production)
    known = [BASE, DOMAIN] + ([PRODUCTION] if production is not None else [])
    raise HangjiaError(f"Unknown model '{name}'; this workspace has: {', '.join(known)}.", status_code=404)
