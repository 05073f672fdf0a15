"""DDP over gloo on 2 CPU processes trains like 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig
from accelerate.commands.launch import launch_command_parser
from safetensors.torch import load_file

from hangjia.core.config import TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.train import distributed
from hangjia.train.distributed import check_accelerate_config, launch_command, main, per_device_batch, run_distributed
from tests.paths import REPO
from tests.tiny_models import tiny_train_config

DEPLOY = REPO / "deploy" / "distributed"

# Answers of different lengths, so a batch of 4 and two batches of 2 are padded differently.
PAIRS = [
    (f"What does fault code E{i} mean?", f"Fault {i}: drain pump blocked." + " Check the filter." * (i % 3))
    for i in range(32)
]
VAL = PAIRS[28:]
TOLERANCE = 1e-4
# Dropout is off (tiny_train_config): masks of one batch of 4 and of two batches of 2 differ; off, both compute alike.
ARGS = tiny_train_config(
    max_steps=6,  # 6 steps × 4 = 24 of the 28 training pairs: one epoch, no ragged last batch
    batch_size=4,  # global: 1 process × 4, or 2 processes × 2
    max_length=128,
)


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    steps = []
    one = run_distributed(1, tiny_model_dir, PAIRS[:28], [], root / "one", ARGS)
    two = run_distributed(
        2, tiny_model_dir, PAIRS[:28], [], root / "two", ARGS, on_step=lambda s, n, logs: steps.append((s, n, logs))
    )
    return root, one, two, steps


def _losses(out_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]


def _max_diff(a: Path, b: Path) -> float:
    x, y = (load_file(p / "adapter" / "adapter_model.safetensors") for p in (a, b))
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def test_two_gloo_processes_follow_the_one_process_loss_curve(runs):
    root, one, two, _ = runs
    curve_1, curve_2 = _losses(root / "one"), _losses(root / "two")
    print(f"\n1 process × 4:   {curve_1}\n2 processes × 2: {curve_2}")
    assert len(curve_1) == len(curve_2) == 6
    # Same examples per step and the same token-weighted loss by construction (see distributed.py); what differs is
    # float32 summation order (two half-batches and an all-reduce vs one batch of 4): measured 5e-7 on the losses and
    # 6e-6 on the adapter weights. TOLERANCE leaves ~20× room above that and sits ~30× below a real mismatch: ranks
    # that skip the gradient all-reduce drift from the 1-process losses by 3e-3 and from its adapter by 0.27.
    assert curve_2 == pytest.approx(curve_1, abs=TOLERANCE)
    assert curve_1[-1] < curve_1[0]  # it trained
    assert _max_diff(root / "one", root / "two") < TOLERANCE
    assert (one["nproc"], two["nproc"]) == (1, 2) and one["steps"] == two["steps"] == 6


def test_only_rank_0_writes_and_the_job_folder_goes(runs):
    root, *_ = runs
    assert [p.parent.name for p in (root / "two").rglob("adapter_model.safetensors")] == ["adapter"]
    assert len(_losses(root / "two")) == 6  # one log line per step, not one per rank
    assert not list((root / "two").glob(".distributed-*"))  # job spec and rank 1's scratch folder


def test_progress_streams_from_rank_0_once_per_step(runs):
    root, _, _, steps = runs
    assert [(s, n) for s, n, _ in steps] == [(i, 6) for i in range(1, 7)]
    assert [logs["loss"] for *_, logs in steps] == _losses(root / "two")


def test_a_validation_split_keeps_the_ranks_in_step(runs, tiny_model_dir):
    root, *_ = runs
    metrics = run_distributed(2, tiny_model_dir, PAIRS[:28], VAL, root / "two-val", ARGS)
    assert metrics["val_loss_after"] < metrics["val_loss_before"]
    assert _max_diff(root / "one", root / "two-val") < TOLERANCE  # evaluating does not change what is trained


def test_batch_must_split_evenly_over_the_processes(tiny_model_dir, tmp_path):
    assert per_device_batch(4, 2) == 2
    with pytest.raises(
        HangjiaError,
        match=r"batch_size \(4\).*divisible by the number of processes \(3\): set it to 6, or use --nproc 2",
    ):
        run_distributed(3, tiny_model_dir, PAIRS, [], tmp_path, ARGS)
    with pytest.raises(HangjiaError, match="nproc must be 1 or more"):
        run_distributed(0, tiny_model_dir, PAIRS, [], tmp_path, ARGS)
    assert not any(tmp_path.iterdir())  # refused before anything was written or launched


# Stand-ins for the launcher: each leaves what a failed job leaves in the job folder, then exits 1.
NOTHING = "print('loading'); print('RuntimeError: gloo connect timed out')"
CRASH_NOTE = "(d / 'crash-rank1.txt').write_text('rank 1:\\nTraceback ...\\nMemoryError')"
ERROR_NOTE = "(d / 'error-rank0.txt').write_text('Base model /m has no config.json.')"


@pytest.mark.parametrize(
    ("leaves", "expected"),
    [
        (NOTHING, r"2 processes failed \(exit code 1\); the end of its log:\nloading\nRuntimeError: gloo connect"),
        (
            CRASH_NOTE,
            r"^Distributed training on 2 processes failed with an exception: rank 1:\nTraceback ...\nMemoryError$",
        ),
        (ERROR_NOTE, r"^Base model /m has no config.json.$"),
    ],
)
def test_a_failed_job_says_what_went_wrong(tiny_model_dir, tmp_path, monkeypatch, leaves, expected):
    script = f"import sys, pathlib; d = pathlib.Path(sys.argv[1]).parent; {leaves}; sys.exit(1)"
    monkeypatch.setattr(distributed, "launch_command", lambda job, n, cfg: [sys.executable, "-c", script, str(job)])
    (tmp_path / ".distributed-killed").mkdir()  # a job folder left by a launcher killed with -9
    with pytest.raises(HangjiaError, match=expected):
        run_distributed(2, tiny_model_dir, PAIRS, [], tmp_path, ARGS)
    assert not list(tmp_path.glob(".distributed-*"))  # neither the stale one nor this job's


def test_the_job_carries_the_train_section_and_resume_to_the_workers(tiny_model_dir, tmp_path, monkeypatch):
    # A stand-in launcher: keeps the job file beside the job folder and reports metrics, as rank 0 would.
    script = (
        "import shutil, sys, pathlib; job = pathlib.Path(sys.argv[1]); "
        "shutil.copy(job, job.parent.parent / 'seen.json'); (job.parent / 'metrics.json').write_text('{\"steps\": 0}')"
    )
    monkeypatch.setattr(distributed, "launch_command", lambda job, n, cfg: [sys.executable, "-c", script, str(job)])
    bf16 = ARGS.model_copy(update={"bf16": True})
    metrics = run_distributed(2, tiny_model_dir, PAIRS, [], tmp_path, bf16, resume=True)
    assert metrics == {"steps": 0, "nproc": 2}
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert TrainConfig.model_validate(seen["args"]) == bf16 and seen["resume"] is True


def test_a_worker_leaves_a_note_for_the_launcher(tiny_model_dir, tmp_path):
    spec = {"base_dir": str(tiny_model_dir), "out_dir": str(tmp_path / "out"), "train_pairs": PAIRS, "val_pairs": []}
    # A user mistake (early stopping needs eval_steps and a validation split): its one sentence.
    job = tmp_path / "mistake" / "job.json"
    job.parent.mkdir()
    job.write_text(
        json.dumps({**spec, "args": ARGS.model_copy(update={"early_stopping_patience": 2}).model_dump(mode="json")})
    )
    assert main([str(job)]) == 1
    assert (job.parent / "error-rank0.txt").read_text().startswith("Early stopping watches the validation loss")
    # Anything else: the end of its traceback, and the exception goes on to the launcher.
    job = tmp_path / "crash" / "job.json"
    job.parent.mkdir()
    job.write_text(json.dumps({**spec, "base_dir": str(tmp_path / "missing"), "args": ARGS.model_dump(mode="json")}))
    with pytest.raises(OSError):
        main([str(job)])
    note = (job.parent / "crash-rank0.txt").read_text()
    assert note.startswith("rank 0:\n") and note.splitlines()[-1].startswith("OSError")


def test_ranks_stop_when_the_launching_process_is_gone(tmp_path):
    progress = tmp_path / "progress.jsonl"
    distributed._step_hook(progress, os.getpid())(1, 6, {"loss": 2.5})
    assert json.loads(progress.read_text()) == {"step": 1, "total": 6, "logs": {"loss": 2.5}}
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with pytest.raises(HangjiaError, match=f"pid {gone.stdout.strip()}.* is gone"):
        distributed._step_hook(None, int(gone.stdout))(2, 6, {"loss": 2.4})


def test_launch_commands(tmp_path):
    job = tmp_path / "job.json"
    torchrun = launch_command(job, 2)
    assert torchrun[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hangjia.train.distributed",
        str(job),
    ]
    config = DEPLOY / "ds_zero2.yaml"
    accelerate = launch_command(job, 8, config)
    assert accelerate[1:3] == ["-m", "accelerate.commands.launch"]
    parsed = launch_command_parser().parse_args(accelerate[3:])  # accelerate's own parser accepts every flag
    assert (parsed.config_file, parsed.num_processes, parsed.module) == (str(config), 8, True)
    assert (parsed.training_script, parsed.training_script_args) == ("hangjia.train.distributed", [str(job)])


@pytest.mark.parametrize("name", ["ds_zero2.yaml", "ds_zero3.yaml", "fsdp.yaml"])
def test_shipped_accelerate_configs_load(name):
    config = ClusterConfig.from_yaml_file(DEPLOY / name)  # raises on a key this accelerate does not know
    assert config.mixed_precision == "no"  # train.bf16 decides precision, not the launcher
    if name.startswith("ds_"):
        assert config.distributed_type == "DEEPSPEED"
        assert config.deepspeed_config["zero_stage"] == int(name[len("ds_zero")])
    else:
        assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2


def test_configs_that_would_save_a_partial_adapter_are_refused():
    for name in ("ds_zero3.yaml", "fsdp.yaml"):
        with pytest.raises(HangjiaError, match="gather shards"):
            check_accelerate_config(DEPLOY / name, [])
    check_accelerate_config(DEPLOY / "ds_zero2.yaml", [])
    check_accelerate_config(DEPLOY / "ds_zero2.yaml", VAL)  # validation is measured inside train() now
    with pytest.raises(HangjiaError, match="does not exist"):
        check_accelerate_config(DEPLOY / "nope.yaml", [])
