import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hangjia.core.errors import HangjiaError
from hangjia.train.sft import _StepLog, latest_checkpoint, train_lora_sft
from tests.tiny_models import tiny_train_config

PAIRS = [(f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked.") for i in range(12)]
OTHER = [(f"How long is the warranty on model W{i}?", f"Model W{i} carries {i + 2} years.") for i in range(4)]

# Runs train_lora_sft in a child process, 0.3 s a step, so the test can kill it mid-run.
CHILD = """
import json, sys, time
from pathlib import Path
from hangjia.core.config import TrainConfig
from hangjia.train.sft import train_lora_sft
spec = json.loads(Path(sys.argv[1]).read_text())
args = TrainConfig.model_validate(spec["args"])
train_lora_sft(Path(spec["base"]), spec["train"], [], Path(spec["out"]), args, on_step=lambda *_: time.sleep(0.3))
"""


def _args(**over):
    return tiny_train_config(**{"epochs": 10, "max_steps": 8, "max_length": 512, **over})


def _log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _text(path):
    return path.read_text() if path.is_file() else ""


def test_a_killed_run_resumes_to_the_same_result(tiny_model_dir, tmp_path):
    args = _args(save_steps=2, packing=True)
    whole = train_lora_sft(tiny_model_dir, PAIRS, [], tmp_path / "whole", args)

    out = tmp_path / "killed"
    spec = {"base": str(tiny_model_dir), "out": str(out), "train": PAIRS, "args": args.model_dump(mode="json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "spec.json")])
    try:
        # Kill it once checkpoint-4 is complete and step 5 is logged: the resumed run redoes step 5.
        deadline = time.time() + 60
        while not (
            (out / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file()
            and '"step": 5,' in _text(out / "trainer_log.jsonl")
        ):
            assert child.poll() is None, "the child run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint-4 and step 5 within 60 s"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    resumed = train_lora_sft(tiny_model_dir, PAIRS, [], out, args, resume=True)
    assert resumed["resumed_from_step"] == 4
    assert resumed["steps"] == whole["steps"] == 8
    assert resumed["final_train_loss"] == pytest.approx(whole["final_train_loss"], abs=1e-4)
    steps = [r["step"] for r in _log(out / "trainer_log.jsonl")]
    assert steps == list(range(1, 9))  # no step logged twice, none lost
    a, b = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (tmp_path / "whole", out))
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)


def test_latest_checkpoint_skips_and_removes_a_half_written_one(tmp_path):
    for step, complete in [(2, True), (4, True), (6, False)]:
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()
    assert latest_checkpoint(tmp_path / "none-yet") is None


def test_a_resumed_log_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    log = tmp_path / "trainer_log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    _StepLog(log, None).restart(4)  # a kill cut the last line short
    assert [r["step"] for r in _log(log)] == [1, 2, 3, 4]


def test_early_stopping_stops_when_validation_loss_rises_and_keeps_the_best(tiny_model_dir, tmp_path):
    base = _sharpened(tiny_model_dir, tmp_path / "base")
    # Same questions, other answers: once the model learns the training answers, validation loss must rise.
    conflicting = [(f"What does fault code E{i} mean?", f"Heater {i} failed; call service.") for i in range(4)]
    args = _args(max_steps=16, learning_rate=2e-1, eval_steps=1, early_stopping_patience=2)
    metrics = train_lora_sft(base, PAIRS, conflicting, tmp_path / "run", args)
    losses = {r["step"]: r["eval_loss"] for r in _log(tmp_path / "run" / "eval_log.jsonl")}
    best = min(losses, key=losses.get)
    assert metrics["stopped_early"] and metrics["steps"] == best + 2 < 16  # two evaluations without improvement
    assert metrics["best_step"] == best
    assert losses[best + 2] > losses[best] + 0.1  # a real rise, not noise
    assert metrics["final_train_loss"] < metrics["first_train_loss"]  # while the training loss kept falling
    # The saved adapter is the best checkpoint's, not the last step's.
    assert metrics["val_loss_after"] == pytest.approx(losses[best], abs=1e-5)
    saved = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    kept = load_file(tmp_path / "run" / "checkpoints" / f"checkpoint-{best}" / "adapter_model.safetensors")
    assert saved.keys() == kept.keys() and all(torch.equal(saved[k], kept[k]) for k in saved)


def _sharpened(model_dir, out):
    """The tiny model with embeddings ×10. Its std-0.02 embeddings cap the logits near ±0.6, so its loss hardly
    leaves ln(vocab) and validation loss only wobbles; sharper ones let LoRA overfit within a few steps."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def test_early_stopping_without_validation_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(HangjiaError, match="eval_steps"):
        train_lora_sft(tiny_model_dir, PAIRS, [], tmp_path, _args(early_stopping_patience=2))
    with pytest.raises(HangjiaError, match="multiple"):
        train_lora_sft(
            tiny_model_dir, PAIRS, OTHER, tmp_path, _args(early_stopping_patience=2, eval_steps=2, save_steps=3)
        )
