"""Hyperparameter search for LoRA SFT: learning rate, LoRA rank and alpha, epochs, with Optuna.

One study, TPE-sampled, minimising the validation loss after training. Each trial is an ordinary
`build_trainer` run into out_dir/trials/<n>/ that evaluates every `eval_steps` steps; a callback reports
each validation loss to Optuna and stops the run when the median rule says the trial is behind the trials
that finished (it is then recorded as pruned). The study lives in out_dir/study.db (SQLite), so a tune that
was interrupted picks up where it stopped: finished trials are kept, the one cut short is replaced.

Outputs: results.csv (one row per trial), best.yaml (a `train:` section: the best parameters merged into the
base arguments), config.json (what was searched, over what data) and each completed trial's adapter.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState
from transformers import TrainerCallback

from hangjia.core.config import TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.train.sft import build_trainer

STUDY_NAME = "hangjia-tune"
EVALS_PER_TRIAL = 4
"""With train.eval_steps at 0, the shortest trial is evaluated about this often (enough points to prune on)."""
PARAMS = {"learning_rate", "lora_r", "lora_alpha_ratio", "epochs"}
"""Names of the sampled parameters in the study (alpha is sampled as a multiple of the rank)."""
WHAT = {"space": "search space", "base_args": "train settings", "data": "train/validation pairs"}
LAUNCH = {"base_model", "nproc", "accelerate_config"}
"""TrainConfig fields that say how to launch a run, not what it trains: not part of what a study compares."""
COLUMNS = ["trial", "state", "value", "learning_rate", "lora_r", "lora_alpha", "epochs", "steps", "duration_s"]


@dataclass
class SearchSpace:
    learning_rate: tuple[float, float] = (5e-5, 5e-3)
    """Lowest and highest peak learning rate; sampled log-uniformly."""
    lora_r: list[int] = field(default_factory=lambda: [8, 16, 32])
    """LoRA ranks to try."""
    lora_alpha_ratio: list[float] = field(default_factory=lambda: [1.0, 2.0])
    """lora_alpha to try, as multiples of the rank (2: alpha = 2r, the common choice)."""
    epochs: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0])
    """Passes over the training pairs to try."""

    def __post_init__(self) -> None:
        low, high = self.learning_rate
        if not 0 < low <= high:
            raise HangjiaError(f"tune.learning_rate must be [low, high] with 0 < low <= high, not {[low, high]}.")
        for name in ("lora_r", "lora_alpha_ratio", "epochs"):
            values = getattr(self, name)
            if not values or any(v <= 0 for v in values):
                raise HangjiaError(f"tune.{name} must list at least one value, all above 0, not {values}.")


@dataclass
class TuneResult:
    best_trial: int | None
    """Number of the completed trial with the lowest validation loss (None: no trial completed)."""
    best_value: float | None
    """Its validation loss."""
    best_params: dict[str, Any]
    """Its sampled parameters as train arguments: learning_rate, lora_r, lora_alpha, epochs."""
    best_args: TrainConfig | None
    """The base settings (not the trials' eval and checkpoint settings) with the best parameters merged in."""
    rows: list[dict[str, Any]]
    """One row per trial of the study (also in results.csv), in trial order."""
    ran: int
    """Trials run by this call; the rest came from an earlier, interrupted or shorter, tune."""


def tune(
    base_dir: Path,
    train_pairs: list[tuple[str, str]],
    val_pairs: list[tuple[str, str]],
    out_dir: Path,
    base_args: TrainConfig,
    *,
    space: SearchSpace | None = None,
    n_trials: int = 20,
    seed: int = 0,
    timeout_s: float | None = None,
    prune_after_trials: int = 3,
    prune_warmup_steps: int = 0,
    enqueue: Sequence[Mapping[str, Any]] = (),
    base_model: str | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
) -> TuneResult:
    """Search `space` for the train arguments with the lowest validation loss; see the module docstring.

    n_trials counts completed and pruned trials over all runs into `out_dir`: a rerun only makes up the difference.
    timeout_s: start no trial after this many seconds (the running one finishes). prune_after_trials: completed
    trials before any is pruned; prune_warmup_steps: optimizer steps before a trial can be pruned. enqueue: params
    ({"learning_rate": 1e-3, ...}, by search-space name) for the first trials of a new study, e.g. the current
    config as a baseline; unnamed ones are sampled. base_model goes into best.yaml so its `train:` pastes whole.
    on_trial(row) follows each finished trial; on_step(trial, step, total_steps) each optimizer step.
    """
    space = space or SearchSpace()
    if not val_pairs:
        raise HangjiaError(
            "Tuning compares validation losses, and there are no validation pairs; give select.splits a validation "
            "share above 0 and rerun `hangjia select`."
        )
    if base_args.max_steps > 0 and len(space.epochs) > 1:
        raise HangjiaError(
            f"train.max_steps ({base_args.max_steps}) fixes the length of every trial, so tuning epochs changes "
            "nothing: set train.max_steps to -1, or give tune.epochs a single value."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    eval_steps = base_args.eval_steps or _default_eval_steps(len(train_pairs), base_args, space)
    trial_args = base_args.model_copy(update={"eval_steps": eval_steps, "save_steps": 0})
    unknown = {key for params in enqueue for key in params} - PARAMS
    if unknown:
        raise HangjiaError(f"Unknown parameters {sorted(unknown)} to enqueue; use {sorted(PARAMS)}.")
    resolved = {
        "space": asdict(space),
        "base_args": _train_section(trial_args),
        "data": _fingerprint(train_pairs, val_pairs),
    }
    resolved = json.loads(json.dumps(resolved))  # as the study stores it (tuples become lists) for the comparison
    study = _open_study(out_dir / "study.db", resolved, seed, prune_after_trials, prune_warmup_steps, enqueue)
    (out_dir / "config.json").write_text(
        json.dumps({**resolved, "seed": seed, "n_trials": n_trials}, indent=2), encoding="utf-8"
    )

    def objective(trial: optuna.Trial) -> float:
        params = _suggest(trial, space)
        trial_dir = out_dir / "trials" / str(trial.number)
        shutil.rmtree(trial_dir, ignore_errors=True)  # left by a study that was deleted and started over
        trial_dir.mkdir(parents=True)
        watch = _TrialWatch(trial, on_step)
        trainer = build_trainer(
            base_dir, train_pairs, val_pairs, trial_dir, trial_args.model_copy(update=params), [watch]
        )
        trainer.train()
        _write_jsonl(trial_dir / "log.jsonl", trainer.state.log_history)
        shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)  # early stopping's; its best is loaded by now
        trial.set_user_attr("steps", trainer.state.global_step)
        if watch.pruned_at is not None:
            step, loss = watch.pruned_at
            raise optuna.TrialPruned(f"validation loss {loss:.4f} at step {step} is above the median of earlier trials")
        last_step, loss = watch.last_eval or (-1, math.nan)
        if last_step != trainer.state.global_step or trial_args.early_stopping_patience > 0:
            loss = trainer.evaluate()["eval_loss"]  # with early stopping: of the best adapter, now loaded
        trainer.model.save_pretrained(trial_dir / "adapter")
        # Optuna fails a trial that returns NaN and would run it again on resume; a diverged run is a result.
        return loss if math.isfinite(loss) else math.inf

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        _write_outputs(out_dir, study, base_args, base_model)
        if on_trial is not None:
            on_trial(_row(trial))

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    remaining = max(n_trials - done, 0)
    if remaining:
        study.optimize(objective, n_trials=remaining, timeout=timeout_s, callbacks=[after_trial], gc_after_trial=True)
    rows = _write_outputs(out_dir, study, base_args, base_model)
    ran = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) - done
    best = _best(study)
    if best is None:
        return TuneResult(None, None, {}, None, rows, ran)
    params = _train_params(best.params)
    return TuneResult(best.number, best.value, params, base_args.model_copy(update=params), rows, ran)


def current_params(args: TrainConfig, space: SearchSpace) -> dict[str, Any]:
    """The values `args` already has for the searched parameters, those that lie in `space`: to enqueue the
    current config as the first trial, a baseline the search has to beat."""
    low, high = space.learning_rate
    values = {
        "learning_rate": args.learning_rate if low <= args.learning_rate <= high else None,
        "lora_r": args.lora_r if args.lora_r in space.lora_r else None,
        "lora_alpha_ratio": next((x for x in space.lora_alpha_ratio if x * args.lora_r == args.lora_alpha), None),
        "epochs": args.epochs if args.epochs in space.epochs else None,
    }
    return {k: v for k, v in values.items() if v is not None}


class _TrialWatch(TrainerCallback):
    """Reports each validation loss during training to the trial and stops training once Optuna prunes it."""

    def __init__(self, trial: optuna.Trial, on_step: Callable[[int, int, int], None] | None):
        self.trial = trial
        self.on_step = on_step
        self.training = False
        self.last_eval: tuple[int, float] | None = None
        self.pruned_at: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self.training or not metrics or "eval_loss" not in metrics:
            return  # the final evaluation is the objective, not an intermediate value
        loss = metrics["eval_loss"]
        self.last_eval = (state.global_step, loss)
        self.trial.report(loss, state.global_step)
        # At the last step the trial has its result; pruning it then would save nothing and discard it.
        if state.global_step < state.max_steps and self.trial.should_prune():
            self.pruned_at = (state.global_step, loss)
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.on_step is not None and logs and "loss" in logs:
            self.on_step(self.trial.number, state.global_step, state.max_steps)


def _open_study(
    path: Path,
    resolved: dict[str, Any],
    seed: int,
    prune_after_trials: int,
    prune_warmup_steps: int,
    enqueue: Sequence[Mapping[str, Any]],
) -> optuna.Study:
    storage = f"sqlite:///{path}"
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="minimize", load_if_exists=True)
    if study.user_attrs:
        changed = [WHAT[key] for key, value in resolved.items() if study.user_attrs.get(key) != value]
        if changed:
            raise HangjiaError(
                f"{path} holds a study run with other {', '.join(changed)}, so its trials are not comparable. "
                f"Tune into another folder, or delete {path.parent} to start over."
            )
    else:
        for key, value in resolved.items():
            study.set_user_attr(key, value)
        for params in enqueue:
            study.enqueue_trial(dict(params))
    # A trial still RUNNING was cut short by a kill; it does not count, and its place goes to a fresh one.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    # Seeded by the trials so far: a resumed study samples new points, not the first run's again.
    sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    pruner = optuna.pruners.MedianPruner(n_startup_trials=prune_after_trials, n_warmup_steps=prune_warmup_steps)
    return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)


def _suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    sampled = {
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "lora_r": trial.suggest_categorical("lora_r", space.lora_r),
        "lora_alpha_ratio": trial.suggest_categorical("lora_alpha_ratio", space.lora_alpha_ratio),
        "epochs": trial.suggest_categorical("epochs", space.epochs),
    }
    return _train_params(sampled)


def _train_params(sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Sampled values as TrainConfig fields: alpha is stored as a multiple of the rank."""
    r = int(sampled["lora_r"])
    return {
        "learning_rate": float(sampled["learning_rate"]),
        "lora_r": r,
        "lora_alpha": max(1, round(r * sampled["lora_alpha_ratio"])),
        "epochs": float(sampled["epochs"]),
    }


def _default_eval_steps(n_train: int, args: TrainConfig, space: SearchSpace) -> int:
    # Evaluations must fall on the same steps in every trial for the median rule to compare them.
    per_epoch = math.ceil(n_train / args.batch_size)
    shortest = args.max_steps if args.max_steps > 0 else math.ceil(per_epoch * min(space.epochs))
    return max(1, shortest // EVALS_PER_TRIAL)


def _fingerprint(train_pairs: list[tuple[str, str]], val_pairs: list[tuple[str, str]]) -> str:
    data = json.dumps([train_pairs, val_pairs], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:16]


def _train_section(args: TrainConfig) -> dict[str, Any]:
    """The settings as a `train:` config section, less how to launch (base_model is best.yaml's own line)."""
    return args.model_dump(mode="json", exclude=LAUNCH)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(completed, key=lambda t: t.value) if completed else None


def _row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    params = _train_params(trial.params) if set(trial.params) == PARAMS else {}  # a killed trial may lack some
    return {
        "trial": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value if trial.state == TrialState.COMPLETE else None,  # not a pruned one's last eval
        **{k: params.get(k) for k in ("learning_rate", "lora_r", "lora_alpha", "epochs")},
        "steps": trial.user_attrs.get("steps"),
        "duration_s": round(trial.duration.total_seconds(), 1) if trial.duration else None,
    }


def _write_outputs(
    out_dir: Path, study: optuna.Study, args: TrainConfig, base_model: str | None
) -> list[dict[str, Any]]:
    """results.csv with every finished trial; best.yaml once a trial has completed."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    rows = [_row(t) for t in trials]
    with open(out_dir / "results.csv", "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    best = _best(study)
    if best is not None:
        section = _train_section(args.model_copy(update=_train_params(best.params)))
        if base_model is not None:
            section = {"base_model": base_model, **section}
        header = (
            f"# Best of {len(rows)} trials: trial {best.number}, validation loss {best.value:.4f}.\n"
            "# Paste over the train: section of hangjia.yaml.\n"
        )
        text = header + yaml.safe_dump({"train": section}, sort_keys=False, allow_unicode=True)
        (out_dir / "best.yaml").write_text(text, encoding="utf-8")
    return rows


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
