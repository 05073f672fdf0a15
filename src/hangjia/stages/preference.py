"""`hangjia dpo` and `hangjia reward`: preference pairs (given, or made from the domain model's own wrong
answers) → DPO of the SFT adapter, or a pairwise reward model.

The DPO adapter starts from the SFT adapter and, once written, is what `domain` means to eval and serve, for as long
as the SFT adapter it started from is the current one (llm/weights.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import read_jsonl, write_jsonl
from hangjia.core.workspace import Workspace, sha256_file
from hangjia.stages.reporting import done, progress_bar, skipped, step_reporter


def _made_preferences(ws: Workspace, cfg: ProjectConfig, status) -> list[tuple[str, str, str]]:
    """(prompt, reference answer, the SFT model's wrong answer) for the select stage's train pairs."""
    from hangjia.eval.scoring import is_correct
    from hangjia.llm.generation import Engine, GenerationParams
    from hangjia.llm.weights import DOMAIN, trained_weights

    sft = trained_weights(ws)
    rows = [r for r in read_jsonl(ws.stage_dir("select") / "train.jsonl") if r.get("generator") != "general"]
    rows = random.Random(cfg.preference.seed).sample(rows, len(rows))
    engine = Engine(sft.base_dir, sft.tuned)
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


def _preference_inputs(ws: Workspace, cfg: ProjectConfig, feedback: str | None = None) -> dict[str, str]:
    train = ws.require("train", "`hangjia train`")
    inputs = {"train": train["fingerprint"]}
    if feedback is not None:
        inputs["feedback_dpo"] = feedback
    elif cfg.preference.file is not None and cfg.preference.file.is_file():
        inputs["file"] = sha256_file(cfg.preference.file)
    return inputs


def feedback_preferences(ws: Workspace, ref: str, limit: int | None = None) -> list[tuple[str, str, str]]:
    """The pairs of a feedback_dpo version (`hangjia feedback export`): the question as the model read it, the
    picked draft or the correction, the draft or answer it replaced."""
    from hangjia.corpus.datasets import DatasetStore

    rows = DatasetStore(ws.root / "datasets").resolve(ref).read(columns=["question", "chosen", "rejected"]).to_pylist()
    return [(r["question"], r["chosen"], r["rejected"]) for r in rows][:limit]


def _preferences(
    ws: Workspace, cfg: ProjectConfig, run_dir: Path, status, feedback: str | None = None
) -> tuple[list, list, str]:
    """(train, val) preference pairs and where they came from; the pairs used are saved in the stage folder."""
    if feedback is not None:
        pairs, origin = feedback_preferences(ws, feedback, cfg.preference.max_pairs), feedback
    elif cfg.preference.file is not None:
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


def dpo(
    ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False, *, feedback: str | None = None
) -> dict[str, Any]:
    """DPO of the SFT adapter on preference pairs (`feedback`: those of this feedback_dpo version, else
    preference.file, else made); the result becomes the `domain` model."""
    from hangjia.llm.weights import trained_weights
    from hangjia.train.preference import train_dpo

    inputs = _preference_inputs(ws, cfg, feedback)
    sft = trained_weights(ws)
    if sft.is_full_model:
        raise HangjiaError(
            "DPO continues the SFT adapter, but train.method full wrote a whole model; train with method lora, or "
            f"set train.base_model to {sft.tuned} and train a LoRA adapter on it first."
        )
    config = {**cfg.preference.model_dump(mode="json"), "max_new_tokens": cfg.eval.max_new_tokens}
    if not force and ws.is_current("dpo", inputs, config):
        return skipped("dpo", ws)
    with ws.stage("dpo", inputs, config) as run:
        with console.status("preference pairs") as status:
            train_pairs, val_pairs, origin = _preferences(ws, cfg, run.dir, status, feedback)
        with progress_bar(console) as progress:
            task = progress.add_task("dpo", total=None, status="")
            metrics = train_dpo(
                sft.base_dir,
                train_pairs,
                run.dir,
                cfg.preference,
                cfg.train,  # a fresh adapter's LoRA shape; DPO continues the SFT adapter, which brings its own
                adapter=sft.tuned,
                on_step=step_reporter(progress, task, cfg.preference.batch_size),
                val_pairs=val_pairs,
            )
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics, origin=origin)
    return done("dpo", ws)


def reward(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """A pairwise reward model on preference pairs (LoRA + score head); held-out pair accuracy before/after."""
    from hangjia.llm.weights import trained_weights
    from hangjia.train.preference import train_reward_model

    inputs = _preference_inputs(ws, cfg)
    config = {**cfg.preference.model_dump(mode="json"), "max_new_tokens": cfg.eval.max_new_tokens}
    if not force and ws.is_current("reward", inputs, config):
        return skipped("reward", ws)
    base_dir = trained_weights(ws).base_dir
    with ws.stage("reward", inputs, config) as run:
        with console.status("preference pairs") as status:
            train_pairs, val_pairs, origin = _preferences(ws, cfg, run.dir, status)
        with progress_bar(console) as progress:
            task = progress.add_task("reward", total=None, status="")
            metrics = train_reward_model(
                base_dir,
                train_pairs,
                run.dir,
                cfg.preference,
                cfg.train,  # the LoRA shape: train's lora_r, lora_alpha, target_modules
                on_step=step_reporter(progress, task, cfg.preference.batch_size),
                val_pairs=val_pairs,
            )
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics, origin=origin)
    return done("reward", ws)
