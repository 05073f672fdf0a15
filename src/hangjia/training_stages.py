"""The training stages around SFT: `pretrain` (continued pretraining), `dpo` and `reward` (preferences).

    ingest ─► pretrain ─► (train.base_model: pretrain) ─► train (SFT, pipeline.py) ─► dpo ─► eval / serve
                                                                                 └─► reward

Each is a workspace stage like the others (skipped when inputs and config are unchanged, committed
atomically). The DPO adapter starts from the SFT adapter and, once written, is what `domain` means to
eval and serve, for as long as the SFT adapter it started from is the current one.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.config import LLAMA_LINEAR, ProjectConfig
from hangjia.errors import HangjiaError
from hangjia.pipeline import _done, _ingested, _progress, _skipped, read_jsonl, write_jsonl
from hangjia.workspace import Workspace, sha256_file


def _on_step(progress, task, batch_size: int):
    """A trainer step callback that shows step, loss and samples/s on a rich progress bar."""
    started, first = time.time(), None

    def on_step(step: int, total: int, logs: dict[str, float]) -> None:
        nonlocal first
        first = step - 1 if first is None else first
        rate = (step - first) * batch_size / max(time.time() - started, 1e-9)
        loss = f"loss {logs['loss']:.3f}  " if "loss" in logs else ""
        progress.update(task, completed=step, total=total, status=f"{loss}{rate:.2f} samples/s")

    return on_step


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
    from hangjia.data.general import load_general_prompts, self_distilled
    from hangjia.data.teacher import CachedTeacher, LocalTeacher

    prompts = load_general_prompts(cfg.select.general_prompts)
    status.update(f"the base model answers {len(prompts)} general prompts (replay text)")
    base = CachedTeacher(LocalTeacher(base_dir, batch_size=16), ws.root / "cache" / "teacher.sqlite")
    return [f"{p.question}\n{p.answer}" for p in self_distilled(prompts, base, max_tokens=256)]


def pretrain(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Continued pretraining on the ingested documents; writes pretrain/model (the LoRA merged in, or full)."""
    from hangjia.models import load_causal_lm, load_tokenizer, resolve_base
    from hangjia.train.pretrain import CPTArgs, train_cpt

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"]}
    inputs.update({f"replay:{p.name}": sha256_file(p) for p in cfg.pretrain.replay if p.is_file()})
    config = cfg.pretrain.model_dump(mode="json")
    if not force and ws.is_current("pretrain", inputs, config):
        return _skipped("pretrain", ws)
    p = cfg.pretrain
    fields = ("full", "block_size", "learning_rate", "epochs", "max_steps", "batch_size", "warmup_ratio")
    args = CPTArgs(
        **{k: getattr(p, k) for k in fields},
        val_fraction=p.val_fraction,
        lora_r=p.lora_r,
        lora_alpha=p.lora_alpha,
        target_modules=list(LLAMA_LINEAR),
        seed=p.seed,
    )
    texts = [d["text"] for d in _ingested(ws, "documents")]
    with ws.stage("pretrain", inputs, config) as run:
        with console.status("preparing the base model") as status:
            base_dir = resolve_base(p.base_model)
            replay = _replay_texts(ws, cfg, base_dir, status)
        with _progress(console) as progress:
            task = progress.add_task("pretrain", total=None, status="")
            metrics = train_cpt(
                base_dir, texts, run.dir, args, replay, p.replay_ratio, _on_step(progress, task, p.batch_size)
            )
        if not p.full:
            with console.status("merging the adapter into the base model"):
                merged = load_causal_lm(base_dir, run.dir / "adapter").merge_and_unload()
                merged.save_pretrained(run.dir / "model")
                load_tokenizer(base_dir).save_pretrained(run.dir / "model")
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics, domain_documents=len(texts), replay_texts=len(replay))
    return _done("pretrain", ws)


# ---------------------------------------------------------------- preferences


def _made_preferences(ws: Workspace, cfg: ProjectConfig, status) -> list[tuple[str, str, str]]:
    """(prompt, reference answer, the SFT model's wrong answer) for the select stage's train pairs."""
    from hangjia.engine import DOMAIN, Engine, GenerationParams
    from hangjia.eval.scoring import is_correct
    from hangjia.models import resolve_base

    train = ws.require("train", "`hangjia train`")
    rows = [r for r in read_jsonl(ws.stage_dir("select") / "train.jsonl") if r.get("generator") != "general"]
    rows = random.Random(cfg.preference.seed).sample(rows, len(rows))
    full = ws.stage_dir("train") / "model"
    tuned = full if full.is_dir() else ws.stage_dir("train") / "adapter"
    engine = Engine(resolve_base(train["config"]["base_model"], ws.root), tuned)
    params = GenerationParams(max_new_tokens=cfg.eval.max_new_tokens, temperature=0.0)
    made: list[tuple[str, str, str]] = []
    for start in range(0, len(rows), cfg.eval.batch_size):
        if len(made) >= cfg.preference.max_pairs:
            break
        batch = rows[start : start + cfg.eval.batch_size]
        status.update(f"the domain model answers its training questions ({start}/{len(rows)}, {len(made)} wrong)")
        prompts = [r.get("prompt") or r["question"] for r in batch]
        outs = engine.generate_batch(
            [engine.prepare([{"role": "user", "content": q}], False)[0] for q in prompts], DOMAIN, params
        )
        for prompt, row, out in zip(prompts, batch, outs, strict=True):
            # No answer at all is a wrong answer too: the reference is preferred to silence.
            if not is_correct(out.text, row["answer"], [], "lookup"):
                made.append((prompt, row["answer"], out.text.strip()))
    return made[: cfg.preference.max_pairs]


def _read_preferences(path: Path, limit: int) -> list[tuple[str, str, str]]:
    if not path.is_file():
        raise HangjiaError(f"preference.file {path} does not exist.")
    pairs = []
    for n, row in enumerate(read_jsonl(path), start=1):
        try:
            q, chosen, rejected = (str(row[k]).strip() for k in ("question", "chosen", "rejected"))
        except (KeyError, TypeError):
            raise HangjiaError(f'{path}:{n}: expected {{"question", "chosen", "rejected"}}.') from None
        if q and chosen and rejected and chosen != rejected:
            pairs.append((q, chosen, rejected))
    if not pairs:
        raise HangjiaError(f"{path} has no usable preference pairs (question, chosen and rejected all set, differing).")
    return pairs[:limit]


def _preference_inputs(ws: Workspace, cfg: ProjectConfig) -> dict[str, str]:
    train = ws.require("train", "`hangjia train`")
    inputs = {"train": train["fingerprint"]}
    if cfg.preference.file is not None and cfg.preference.file.is_file():
        inputs["file"] = sha256_file(cfg.preference.file)
    return inputs


def _preferences(ws: Workspace, cfg: ProjectConfig, run_dir: Path, status) -> tuple[list, list, str]:
    """(train, val) preference pairs and where they came from; the pairs used are saved in the stage folder."""
    if cfg.preference.file is not None:
        pairs, origin = _read_preferences(cfg.preference.file, cfg.preference.max_pairs), "file"
    else:
        pairs, origin = _made_preferences(ws, cfg, status), "made from the train split"
        if len(pairs) < 2:
            raise HangjiaError(
                f"The domain model got all but {len(pairs)} of its training questions right: too few preference "
                "pairs to learn from. Give preference.file instead."
            )
    write_jsonl(run_dir / "preferences.jsonl", [{"question": q, "chosen": c, "rejected": r} for q, c, r in pairs])
    order = random.Random(cfg.preference.seed).sample(range(len(pairs)), len(pairs))
    n_val = round(cfg.preference.val_fraction * len(pairs)) if len(pairs) >= 10 else 0
    held = set(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held], origin


def _preference_args(cfg: ProjectConfig) -> dict[str, Any]:
    p, t = cfg.preference, cfg.train
    return {
        "learning_rate": p.learning_rate,
        "epochs": p.epochs,
        "max_steps": p.max_steps,
        "batch_size": p.batch_size,
        "max_length": p.max_length,
        "lora_r": t.lora_r,
        "lora_alpha": t.lora_alpha,
        "target_modules": list(t.target_modules),
        "seed": p.seed,
    }


def dpo(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """DPO of the SFT adapter on preference pairs; the result becomes the `domain` model."""
    from hangjia.models import resolve_base
    from hangjia.train.preference import DPOArgs, train_dpo

    inputs = _preference_inputs(ws, cfg)
    if (ws.stage_dir("train") / "model").is_dir():
        raise HangjiaError(
            "DPO continues the SFT adapter, but train.method full wrote a whole model; train with method lora, or "
            f"set train.base_model to {ws.stage_dir('train') / 'model'} and train a LoRA adapter on it first."
        )
    config = {**cfg.preference.model_dump(mode="json"), "max_new_tokens": cfg.eval.max_new_tokens}
    if not force and ws.is_current("dpo", inputs, config):
        return _skipped("dpo", ws)
    base_dir = resolve_base(ws.manifest("train")["config"]["base_model"], ws.root)
    with ws.stage("dpo", inputs, config) as run:
        with console.status("preference pairs") as status:
            train_pairs, val_pairs, origin = _preferences(ws, cfg, run.dir, status)
        args = DPOArgs(beta=cfg.preference.beta, **_preference_args(cfg))
        with _progress(console) as progress:
            task = progress.add_task("dpo", total=None, status="")
            metrics = train_dpo(
                base_dir,
                train_pairs,
                run.dir,
                args,
                adapter=ws.stage_dir("train") / "adapter",
                on_step=_on_step(progress, task, args.batch_size),
                val_pairs=val_pairs,
            )
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics, origin=origin)
    return _done("dpo", ws)


def reward(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """A pairwise reward model on preference pairs (LoRA + score head); held-out pair accuracy before/after."""
    from hangjia.models import resolve_base
    from hangjia.train.preference import RewardArgs, train_reward_model

    inputs = _preference_inputs(ws, cfg)
    config = {**cfg.preference.model_dump(mode="json"), "max_new_tokens": cfg.eval.max_new_tokens}
    if not force and ws.is_current("reward", inputs, config):
        return _skipped("reward", ws)
    base_dir = resolve_base(ws.manifest("train")["config"]["base_model"], ws.root)
    with ws.stage("reward", inputs, config) as run:
        with console.status("preference pairs") as status:
            train_pairs, val_pairs, origin = _preferences(ws, cfg, run.dir, status)
        args = RewardArgs(**_preference_args(cfg))
        with _progress(console) as progress:
            task = progress.add_task("reward", total=None, status="")
            metrics = train_reward_model(
                base_dir,
                train_pairs,
                run.dir,
                args,
                on_step=_on_step(progress, task, args.batch_size),
                val_pairs=val_pairs,
            )
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics, origin=origin)
    return _done("reward", ws)


# ---------------------------------------------------------------- export

VERIFY_PROMPTS = (
    "What does error code E24 mean on a Kestrel dishwasher?",
    "How long is the warranty on a Kestrel heat pump compressor?",
    "Summarise what a service technician checks first when a dishwasher does not drain.",
)


def export(
    ws: Workspace, cfg: ProjectConfig, console: Console, formats: tuple[str, ...], verify: bool, force: bool = False
) -> dict[str, Any]:
    """The `domain` model merged into its base (fp32 safetensors) and written as GGUF files for llama.cpp; with
    `verify`, llama.cpp's greedy tokens are compared with transformers' on a few prompts."""
    from hangjia.engine import domain_weights
    from hangjia.models import load_tokenizer
    from hangjia.prompts import question_messages
    from hangjia.train.export import export_model

    train = ws.require("train", "`hangjia train`")
    base_dir, tuned = domain_weights(ws, cfg.train.base_model)
    if (tuned / "adapter_config.json").is_file() and json.loads((tuned / "adapter_config.json").read_text()).get(
        "peft_type"
    ) in ("PREFIX_TUNING", "P_TUNING"):
        raise HangjiaError(
            "Prefix tuning and P-tuning add virtual tokens at run time, which cannot be merged into the weights or "
            "written to GGUF; export needs train.method lora or full."
        )
    inputs = {"train": train["fingerprint"], "domain": str(tuned.relative_to(ws.root))}
    if tuned.parent.name == "dpo":
        inputs["dpo"] = ws.manifest("dpo")["fingerprint"]
    full = (tuned / "config.json").is_file() and not (tuned / "adapter_config.json").is_file()
    # As training and the server shape them (the shared system prompt, then the question), so that a tuned model
    # answers: fed the bare question, the demo's adapter ends at once and only its first token would be compared.
    prompts = []
    if verify:
        tokenizer = load_tokenizer(tuned if full else base_dir)
        prompts = [
            tokenizer.apply_chat_template(question_messages(q), tokenize=False, add_generation_prompt=True)
            if tokenizer.chat_template
            else q
            for q in VERIFY_PROMPTS
        ]
    config = {"formats": list(formats), "verify": verify, "verify_prompts": prompts}
    if not force and ws.is_current("export", inputs, config):
        return _skipped("export", ws)
    with ws.stage("export", inputs, config) as run, console.status(f"merging and writing {', '.join(formats)}"):
        summary = export_model(
            str(tuned if full else base_dir),
            None if full else tuned,
            run.dir,
            formats=formats,
            verify_prompts=prompts if verify else None,
        )
        run.counts.update({f"{fmt}_bytes": v["bytes"] for fmt, v in summary["gguf"].items()})
        for fmt, rows in summary.get("verify", {}).items():
            run.counts[f"{fmt}_greedy_match"] = f"{sum(r['match'] for r in rows)}/{len(rows)}"
            # New tokens transformers generated, and how many of them llama.cpp gave too before the first difference.
            agreed = sum(len(r["hf_tokens"]) if r["match"] else r["first_mismatch"] for r in rows)
            run.counts[f"{fmt}_tokens_agreed"] = f"{agreed}/{sum(len(r['hf_tokens']) for r in rows)}"
    return _done("export", ws)
