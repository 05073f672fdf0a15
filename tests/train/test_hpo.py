import csv
import json
import shutil

import optuna
import pytest
import yaml

from hangjia.core.config import TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.train import hpo
from hangjia.train.hpo import STUDY_NAME, SearchSpace, current_params, tune
from tests.tiny_models import tiny_train_config

PAIRS = [(f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked.") for i in range(32)]
TRAIN, VAL = PAIRS[:24], PAIRS[24:]  # 24 pairs / batch 4 = 6 steps an epoch; evaluated at steps 2, 4, 6

BASE = tiny_train_config(learning_rate=1e-3, max_length=128, eval_steps=2)
SPACE = SearchSpace(learning_rate=(1e-7, 1e-1), lora_r=[2, 4], lora_alpha_ratio=[1.0, 2.0], epochs=[1.0])
SANE = {"learning_rate": 5e-2, "lora_alpha_ratio": 2.0, "epochs": 1.0}
# Trials 0 and 1 learn; trial 2's learning rate is so low that its loss at the first evaluation is still the
# untrained one, well above the two that finished, so the median rule (after 2 finished trials) must prune it.
# Trial 3 is sampled by TPE.
ENQUEUE = [{**SANE, "lora_r": 4}, {**SANE, "lora_r": 2}, {**SANE, "learning_rate": 1e-7, "lora_r": 4}]


def _tune(tiny_model_dir, out_dir, n_trials, **over):
    kwargs = dict(space=SPACE, n_trials=n_trials, seed=0, prune_after_trials=2, enqueue=ENQUEUE, base_model="tiny")
    return tune(tiny_model_dir, TRAIN, VAL, out_dir, BASE, **{**kwargs, **over})


@pytest.fixture(scope="module")
def tuned(tiny_model_dir, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tune")
    finished = []
    result = _tune(tiny_model_dir, out_dir, 4, on_trial=finished.append)
    return out_dir, result, finished


def _table(out_dir):
    with open(out_dir / "results.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_tune_runs_every_trial_and_writes_the_table(tuned):
    out_dir, result, finished = tuned
    table = _table(out_dir)
    assert [int(r["trial"]) for r in table] == [0, 1, 2, 3] == [r["trial"] for r in finished]
    assert result.ran == 4 and len(result.rows) == 4
    for row in table[:2]:
        assert row["state"] == "complete" and int(row["steps"]) == 6  # one epoch
        assert float(row["value"]) > 0 and float(row["duration_s"]) > 0
        assert (out_dir / "trials" / row["trial"] / "adapter" / "adapter_model.safetensors").is_file()
    assert [(r["lora_r"], r["lora_alpha"]) for r in table[:3]] == [("4", "8"), ("2", "4"), ("4", "8")]
    assert float(table[3]["learning_rate"]) >= 1e-7 and table[3]["state"] in {"complete", "pruned"}


def test_a_trial_far_behind_the_median_is_pruned_early(tuned):
    out_dir, _, _ = tuned
    row = _table(out_dir)[2]
    assert row["state"] == "pruned" and row["value"] == ""
    assert int(row["steps"]) == 2  # stopped at the first evaluation, not after the epoch's 6 steps
    assert not (out_dir / "trials" / "2" / "adapter").exists()
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out_dir / 'study.db'}")
    first_eval = [t.intermediate_values[2] for t in study.trials[:3]]
    assert first_eval[2] > max(first_eval[:2]) + 0.05, first_eval  # it really was behind both
    # The last evaluation during training (step 6) is the objective, not measured a second time.
    assert list(study.trials[0].intermediate_values) == [2, 4, 6]
    assert study.trials[0].value == study.trials[0].intermediate_values[6]


def test_best_yaml_holds_the_lowest_trial_merged_into_the_base_args(tuned):
    out_dir, result, _ = tuned
    complete = [r for r in _table(out_dir) if r["state"] == "complete"]
    best = min(complete, key=lambda r: float(r["value"]))
    assert result.best_trial == int(best["trial"]) and result.best_value == pytest.approx(float(best["value"]))
    train = yaml.safe_load((out_dir / "best.yaml").read_text())["train"]
    assert train["base_model"] == "tiny"
    assert train["learning_rate"] == pytest.approx(float(best["learning_rate"]))
    assert (train["lora_r"], train["lora_alpha"]) == (int(best["lora_r"]), int(best["lora_alpha"]))
    assert train["epochs"] == float(best["epochs"])
    assert {k: train[k] for k in ("batch_size", "max_length", "target_modules", "eval_steps")} == {
        "batch_size": 4,
        "max_length": 128,
        "target_modules": ["q_proj", "v_proj"],
        "eval_steps": 2,
    }
    assert not {"resume", "nproc", "accelerate_config"} & set(train)  # how to run, not what to train
    assert result.best_params == {k: train[k] for k in ("learning_rate", "lora_r", "lora_alpha", "epochs")}
    # The trial's own adapter reaches the value in the table.
    assert (out_dir / "trials" / best["trial"] / "adapter").is_dir()


def test_rerun_keeps_finished_trials_and_replaces_a_killed_one(tuned, tiny_model_dir, tmp_path, monkeypatch):
    out_dir = tmp_path / "tune"
    shutil.copytree(tuned[0], out_dir)
    runs = []
    build = hpo.build_trainer
    monkeypatch.setattr(hpo, "build_trainer", lambda *a, **k: runs.append(a[3].name) or build(*a, **k))
    # A tune killed mid-trial leaves that trial RUNNING in the study.
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out_dir / 'study.db'}")
    study.ask()

    again = _tune(tiny_model_dir, out_dir, 4)
    assert runs == [] and again.ran == 0
    states = [r["state"] for r in _table(out_dir)]
    assert states[:4] == [r["state"] for r in _table(tuned[0])] and states[4] == "fail"
    assert again.best_trial == tuned[1].best_trial

    more = _tune(tiny_model_dir, out_dir, 5)
    assert runs == ["5"] and more.ran == 1  # one more, not the enqueued ones again, not the killed one
    assert [r["trial"] for r in more.rows] == [0, 1, 2, 3, 4, 5]


def test_a_study_over_other_settings_is_not_extended(tuned, tiny_model_dir, tmp_path):
    out_dir = tmp_path / "tune"
    shutil.copytree(tuned[0], out_dir)
    other = SearchSpace(learning_rate=(1e-5, 1e-1), lora_r=[2, 4], lora_alpha_ratio=[1.0, 2.0], epochs=[1.0])
    with pytest.raises(HangjiaError, match="other search space"):
        _tune(tiny_model_dir, out_dir, 5, space=other)


def test_epochs_cannot_be_tuned_under_a_step_cap(tiny_model_dir, tmp_path):
    capped = TrainConfig(**{**BASE.model_dump(), "max_steps": 4})
    with pytest.raises(HangjiaError, match="max_steps"):
        tune(tiny_model_dir, TRAIN, VAL, tmp_path, capped, space=SearchSpace(epochs=[1, 2]), n_trials=1)


def test_search_space_rejects_an_empty_or_inverted_range():
    with pytest.raises(HangjiaError, match="learning_rate"):
        SearchSpace(learning_rate=(1e-2, 1e-4))
    with pytest.raises(HangjiaError, match="lora_r"):
        SearchSpace(lora_r=[])


def test_without_eval_steps_the_shortest_trial_is_evaluated_at_least_four_times(tiny_model_dir, tmp_path):
    args = TrainConfig(**{**BASE.model_dump(), "eval_steps": 0, "early_stopping_patience": 2})
    one = SearchSpace(learning_rate=(5e-2, 5e-2), lora_r=[4], lora_alpha_ratio=[2.0], epochs=[1.0])
    result = tune(tiny_model_dir, TRAIN, VAL, tmp_path, args, space=one, n_trials=1)
    assert json.loads((tmp_path / "config.json").read_text())["base_args"]["eval_steps"] == 1  # 6 steps // 4
    assert result.best_args.eval_steps == 0  # best.yaml keeps the user's own setting
    log = (tmp_path / "trials" / "0" / "log.jsonl").read_text()
    assert log.count('"eval_loss"') >= 4
    assert (tmp_path / "trials" / "0" / "adapter").is_dir()
    assert not (tmp_path / "trials" / "0" / "checkpoints").exists()  # early stopping's, gone once loaded


def test_current_params_keeps_only_the_values_inside_the_space():
    assert current_params(BASE, SPACE) == {"learning_rate": 1e-3, "lora_r": 4, "lora_alpha_ratio": 2.0, "epochs": 1.0}
    outside = TrainConfig(**{**BASE.model_dump(), "learning_rate": 1.0, "lora_r": 8, "lora_alpha": 12, "epochs": 3})
    assert current_params(outside, SPACE) == {}
