"""`hangjia pretrain`: continued pretraining on the ingested documents, with general-text replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import read_jsonl
from hangjia.core.workspace import Workspace, sha256_file
from hangjia.stages.ingest import ingested
from hangjia.stages.reporting import done, progress_bar, skipped, step_reporter


def _read_texts(path: Path) -> list[str]:
    """A .jsonl file's "text" fields, or any other file as one text."""
    if path.suffix == ".jsonl":
        return [r["text"] for r in read_jsonl(path) if str(r.get("text", "")).strip()]
    return [path.read_text(encoding="utf-8")]


def _replay_texts(ws: Workspace, cfg: ProjectConfig, base_dir: Path, status) -> list[str]:
    """General text to replay: the configured files, else the base model's answers to the shipped prompts."""
    if cfg.pretrain.replay:
        missing = [str(p) for p in cfg.pretrain.replay if not p.is_file()]
        if missing:
            raise HangjiaError(f"pretrain.replay file(s) not found: {', '.join(missing)}.")
        return [t for p in cfg.pretrain.replay for t in _read_texts(p)]
    if cfg.pretrain.replay_ratio == 0:
        return []
    from hangjia.instruct.forgetting_guard import load_general_prompts, self_distilled
    from hangjia.llm.teacher import CachedTeacher, LocalTeacher

    prompts = load_general_prompts(cfg.select.general_prompts)
    status.update(f"the base model answers {len(prompts)} general prompts (replay text)")
    base = CachedTeacher(LocalTeacher(base_dir, batch_size=16), ws.root / "cache" / "teacher.sqlite")
    return [f"{p.question}\n{p.answer}" for p in self_distilled(prompts, base, max_tokens=256)]


def pretrain(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Continued pretraining on the ingested documents; writes pretrain/model (the LoRA merged in, or full)."""
    from hangjia.llm.models import load_causal_lm, load_tokenizer, resolve_base
    from hangjia.train.pretrain import train_cpt

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"]}
    inputs.update({f"replay:{p.name}": sha256_file(p) for p in cfg.pretrain.replay if p.is_file()})
    config = cfg.pretrain.model_dump(mode="json")
    if not force and ws.is_current("pretrain", inputs, config):
        return skipped("pretrain", ws)
    p = cfg.pretrain
    texts = [d["text"] for d in ingested(ws, "documents")]
    with ws.stage("pretrain", inputs, config) as run:
        with console.status("preparing the base model") as status:
            base_dir = resolve_base(p.base_model)
            replay = _replay_texts(ws, cfg, base_dir, status)
        with progress_bar(console) as progress:
            task = progress.add_task("pretrain", total=None, status="")
            metrics = train_cpt(base_dir, texts, run.dir, p, replay, step_reporter(progress, task, p.batch_size))
        if not p.full:
            with console.status("merging the adapter into the base model"):
                merged = load_causal_lm(base_dir, run.dir / "adapter").merge_and_unload()
                merged.save_pretrained(run.dir / "model")
                load_tokenizer(base_dir).save_pretrained(run.dir / "model")
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics, domain_documents=len(texts), replay_texts=len(replay))
    return done("pretrain", ws)
