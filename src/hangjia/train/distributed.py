"""LoRA SFT over N data-parallel processes: `hangjia train --nproc N`.

    run_distributed ──writes──► job.json (pairs + the train section, global batch)
          │
          └──launches──► torchrun --standalone --nproc-per-node N -m hangjia.train.distributed job.json
                         (or `accelerate launch --config_file deploy/distributed/….yaml`, for DeepSpeed / FSDP)
                              │
                              └──► rank r: train_lora_sft(…, batch_size / N) — the Trainer wraps the model in DDP

torchrun is the default because it is torch's own launcher and the one that starts N processes on a CPU: `accelerate
launch --cpu` starts a single process unless MPI is set up. `accelerate launch` is only needed to turn an accelerate
config (DeepSpeed ZeRO, FSDP) into the environment the Trainer reads; both set RANK / WORLD_SIZE / LOCAL_RANK.

The global batch equals a 1-process run's: each rank takes batch_size / N examples per step. accelerate cuts one
permutation, seeded by data_seed on every rank, into per-rank batches and deals them out (rank r gets batches r, r+N,
…), so step k sees the same examples as step k of a 1-process run; and the Trainer divides the summed loss by the
token count of the whole global batch (average_tokens_across_devices, gathered over ranks), so the averaged gradient
is the 1-process gradient up to float summation order. One exception: when an epoch's examples are not a multiple of
batch_size, accelerate tops up the last step of the epoch with examples from its start (even_batches), where a
1-process run takes a shorter last step. Validation losses are means over per-rank batches, so they can differ
from a 1-process run's in the last digits.

Every rank runs train_lora_sft, which writes its logs and adapter into its out_dir: rank 0 gets the real out_dir,
the others a scratch folder in the job folder whose `checkpoints` links to the real one, so the Trainer's shared
checkpoints (save, resume, best model for early stopping) work as it expects on one machine.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from hangjia.core.config import TrainConfig
from hangjia.core.errors import HangjiaError
from hangjia.train.sft import latest_checkpoint, train_lora_sft

OnStep = Callable[[int, int, dict[str, float]], None]

# What each process leaves in the job folder for the launcher.
PROGRESS = "progress.jsonl"  # rank 0: one line per optimizer step, read while the job runs
METRICS = "metrics.json"  # rank 0: what train_lora_sft returned
LAUNCHER_LOG = "launcher.log"  # stdout + stderr of the launcher and every rank
TAIL_LINES = 40  # of the launcher log, in the error when a rank dies


def per_device_batch(batch_size: int, nproc: int) -> int:
    """Examples each of `nproc` processes takes per optimizer step so that together they take `batch_size`."""
    if nproc < 1:
        raise HangjiaError(f"train.nproc must be 1 or more (got {nproc}).")
    if batch_size % nproc:
        multiple = -(-batch_size // nproc) * nproc
        raise HangjiaError(
            f"train.batch_size ({batch_size}) is the batch of one optimizer step across all processes, so it must be "
            f"divisible by the number of processes ({nproc}): set it to {multiple}, or use --nproc "
            f"{_divisor(batch_size, nproc)}."
        )
    return batch_size // nproc


def launch_command(job: Path, nproc: int, accelerate_config: Path | None = None) -> list[str]:
    """The command that starts `nproc` workers on this machine, each running this module on `job`."""
    worker = ["-m", "hangjia.train.distributed", str(job)]
    if accelerate_config is None:
        # --standalone: a rendezvous on a free local port, so two jobs on one machine do not collide.
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *worker]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(accelerate_config),
        "--num_processes",
        str(nproc),  # the config's num_processes is a default; the job's count wins
        *worker,
    ]


def run_distributed(
    nproc: int,
    base_dir: Path,
    train_pairs: list[tuple[str, str]],
    val_pairs: list[tuple[str, str]],
    out_dir: Path,
    args: TrainConfig,
    on_step: OnStep | None = None,
    accelerate_config: Path | None = None,
    resume: bool = False,
    start_from: Path | None = None,
) -> dict[str, Any]:
    """train_lora_sft on `nproc` processes with the same global batch (`args.batch_size`); same outputs in `out_dir`.

    Progress reaches `on_step` from rank 0 while the job runs. nproc=1 without an accelerate config trains in this
    process. Returns train_lora_sft's metrics (rank 0's; losses are averaged over all ranks) plus `nproc`.
    """
    per_device_batch(args.batch_size, nproc)
    if accelerate_config is not None:
        check_accelerate_config(accelerate_config, val_pairs)
    if nproc == 1 and accelerate_config is None:
        metrics = train_lora_sft(
            base_dir, train_pairs, val_pairs, out_dir, args, on_step, resume=resume, start_from=start_from
        )
        return {**metrics, "nproc": 1}
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        latest_checkpoint(out_dir / "checkpoints")  # drop a half-written checkpoint once, not N times at once
    for stale in out_dir.glob(".distributed-*"):  # left by a launcher killed with -9 (its ranks stopped themselves)
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".distributed-") as tmp:
        job_dir = Path(tmp)
        job = job_dir / "job.json"
        spec = {
            "base_dir": str(Path(base_dir).resolve()),
            "out_dir": str(out_dir),
            "train_pairs": [list(p) for p in train_pairs],
            "val_pairs": [list(p) for p in val_pairs],
            "args": args.model_dump(mode="json"),
            "resume": resume,
            "start_from": str(Path(start_from).resolve()) if start_from is not None else None,
            "launcher_pid": os.getpid(),
        }
        job.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        cmd = launch_command(job, nproc, accelerate_config)
        returncode = _run(cmd, job_dir, _worker_env(nproc), on_step)
        if returncode != 0:
            raise HangjiaError(_failure(job_dir, nproc, returncode))
        metrics = json.loads((job_dir / METRICS).read_text(encoding="utf-8"))
    return {**metrics, "nproc": nproc}


def check_accelerate_config(path: Path, val_pairs: list[tuple[str, str]]) -> None:
    """Refuse the accelerate configs that train_lora_sft cannot yet run to a correct adapter.

    Remove the branch when sft.py saves with `trainer.save_model` (gathers ZeRO-3 / FSDP shards on every rank;
    `model.save_pretrained` writes rank 0's shard only).
    """
    if not path.is_file():
        raise HangjiaError(f"Accelerate config {path} does not exist; see deploy/distributed/ for ready ones.")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    kind = str(config.get("distributed_type", "")).upper()
    stage = int((config.get("deepspeed_config") or {}).get("zero_stage", 0))
    if kind == "FSDP" or (kind == "DEEPSPEED" and stage == 3):
        raise HangjiaError(
            f"{path.name} shards the weights ({kind}{' ZeRO-3' if stage == 3 else ''}), and Hangjia's trainer does "
            "not yet gather shards when it saves the adapter; use DDP (no config) or ds_zero2.yaml for now."
        )


def _run(cmd: list[str], job_dir: Path, env: dict[str, str], on_step: OnStep | None) -> int:
    """Run the launcher to the end, passing rank 0's steps to `on_step`; stop it if this process is interrupted."""
    progress = _ProgressReader(job_dir / PROGRESS)
    with open(job_dir / LAUNCHER_LOG, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            while proc.poll() is None:
                progress.deliver(on_step)
                time.sleep(0.2)
            progress.deliver(on_step)
        finally:
            if proc.poll() is None:  # Ctrl-C or an error in on_step: torchrun passes SIGTERM on to the ranks
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return proc.returncode


def _worker_env(nproc: int) -> dict[str, str]:
    env = dict(os.environ)
    # The workers import hangjia from where this process did, installed or not.
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    # torchrun would set 1 thread per rank (and warn); on a CPU the ranks share the cores instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def _failure(job_dir: Path, nproc: int, returncode: int) -> str:
    """What went wrong, for a person: a rank's own HangjiaError, else the end of the first crashed rank's traceback,
    else the end of the launcher's log (a rank killed outright leaves no note)."""
    for pattern, header in (("error-rank*.txt", ""), ("crash-rank*.txt", " with an exception")):
        notes = sorted(job_dir.glob(pattern))
        if notes:
            text = notes[0].read_text(encoding="utf-8").strip()
            return f"Distributed training on {nproc} processes failed{header}: {text}" if header else text
    log = (job_dir / LAUNCHER_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    tail = "\n".join(log[-TAIL_LINES:])
    return f"Distributed training on {nproc} processes failed (exit code {returncode}); the end of its log:\n{tail}"


def _divisor(batch_size: int, nproc: int) -> int:
    """The largest process count up to `nproc` that divides `batch_size`."""
    return max(n for n in range(1, nproc + 1) if batch_size % n == 0)


class _ProgressReader:
    """Follows rank 0's progress file, handing each complete line to `on_step` once."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def deliver(self, on_step: OnStep | None) -> None:
        if on_step is None or not self.path.is_file():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            record = json.loads(line)
            on_step(record["step"], record["total"], record["logs"])


# ---- the worker: one per process, started by the launcher ----


def main(argv: list[str] | None = None) -> int:
    """Train this process's share of the job in `argv[0]` (a job.json written by run_distributed)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hangjia.train.distributed JOB.json (started once per process by torchrun)")
        return 2
    job_path = Path(argv[0]).resolve()
    job_dir = job_path.parent
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
        args = TrainConfig.model_validate(job["args"])
        args.batch_size = per_device_batch(args.batch_size, world)
        out_dir = Path(job["out_dir"]) if rank == 0 else _scratch_dir(job_dir, rank, Path(job["out_dir"]))
        joined = _join_process_group(world)
        try:
            metrics = train_lora_sft(
                Path(job["base_dir"]),
                [tuple(p) for p in job["train_pairs"]],
                [tuple(p) for p in job["val_pairs"]],
                out_dir,
                args,
                on_step=_step_hook(job_dir / PROGRESS if rank == 0 else None, job.get("launcher_pid")),
                resume=job.get("resume", False),
                start_from=Path(job["start_from"]) if job.get("start_from") else None,
            )
            if world > 1:
                _check_world(world)
                _check_in_step(out_dir / "adapter" / "adapter_model.safetensors", world)
        finally:
            if joined:
                import torch.distributed as dist

                dist.destroy_process_group()
    except HangjiaError as err:
        (job_dir / f"error-rank{rank}.txt").write_text(str(err), encoding="utf-8")
        print(f"rank {rank}: {err}", file=sys.stderr)
        return 1
    except Exception:
        # The launcher's own summary names the rank but not the error; this note carries it to run_distributed.
        trace = traceback.format_exc().splitlines()
        note = f"rank {rank}:\n" + "\n".join(trace[-TAIL_LINES:])
        (job_dir / f"crash-rank{rank}.txt").write_text(note, encoding="utf-8")
        raise
    if rank == 0:
        (job_dir / METRICS).write_text(json.dumps(metrics), encoding="utf-8")
    return 0


def _scratch_dir(job_dir: Path, rank: int, out_dir: Path) -> Path:
    """Where rank > 0 writes what only rank 0 keeps; its checkpoints are the shared ones in out_dir."""
    scratch = job_dir / f"rank-{rank}"
    scratch.mkdir(exist_ok=True)
    shared = out_dir / "checkpoints"
    shared.mkdir(parents=True, exist_ok=True)
    link = scratch / "checkpoints"
    if not link.is_symlink():
        link.symlink_to(shared, target_is_directory=True)
    return scratch


def _join_process_group(world: int) -> bool:
    """On a CPU, start the gloo process group and tell the Trainer the CPU is meant; True if this started one.

    Without a GPU, transformers 5.23 only trains distributed when `use_cpu` or ACCELERATE_USE_CPU is set (else every
    rank trains alone), and accelerate would pick MPI over gloo where torch has it. With a GPU, the Trainer starts
    NCCL (or DeepSpeed's group) itself.
    """
    import torch
    import torch.distributed as dist

    if world <= 1 or torch.cuda.is_available() or dist.is_initialized():
        return False
    os.environ["ACCELERATE_USE_CPU"] = "true"  # what `accelerate launch --cpu` sets; read by TrainingArguments
    dist.init_process_group(backend="gloo")  # torchrun's MASTER_ADDR / MASTER_PORT / RANK / WORLD_SIZE
    return True


def _check_world(world: int) -> None:
    """The Trainer really trained on `world` processes (not `world` separate single-process runs)."""
    from accelerate import PartialState

    seen = PartialState().num_processes
    if seen != world:
        raise HangjiaError(
            f"The trainer ran on {seen} process(es) of the {world} launched, so each trained alone; "
            "check that torch.distributed works on this machine (gloo on CPU, NCCL on GPU)."
        )


def _check_in_step(adapter: Path, world: int) -> None:
    """Every rank ended with the same adapter, as data-parallel training must (the same averaged gradient each step).

    Ranks that each trained on their own shard without gradient sync would differ, with losses that still look
    plausible. Skipped when ranks > 0 wrote no adapter (a trainer that saves on rank 0 only).
    """
    import torch
    import torch.distributed as dist
    from safetensors.torch import load_file

    mine = None
    if adapter.is_file():
        weights = load_file(adapter)
        flat = torch.cat([weights[k].double().flatten() for k in sorted(weights)])
        position = torch.arange(1, flat.numel() + 1, dtype=torch.float64)  # so swapped values change it too
        mine = (flat.sum().item(), flat.square().sum().item(), (flat * position).sum().item())
    every: list[Any] = [None] * world
    dist.all_gather_object(every, mine)  # every rank takes part, with or without an adapter, so none waits forever
    if any(theirs is None for theirs in every):
        return
    # DDP's all-reduce hands every rank the same bits; 1e-9 only spares a checksum summed in another order.
    if not all(math.isclose(a, b, rel_tol=1e-9) for theirs in every for a, b in zip(theirs, every[0], strict=True)):
        raise HangjiaError(
            f"The {world} processes ended with different adapters, so their gradients were not averaged: each trained "
            "alone on its share of the data. Known cause: evaluating before train() (the validation loss before "
            "training) leaves the model unwrapped; until train_lora_sft measures it inside train(), train with "
            "--nproc 1 or without a validation split."
        )


def _step_hook(progress: Path | None, launcher_pid: int | None) -> OnStep:
    """Called on every rank after each step: rank 0 appends the step to `progress`; every rank stops once the process
    that launched the job is gone (killed with -9, say), instead of training on into a folder a resumed run will use.
    """

    def on_step(step: int, total: int, logs: dict[str, float]) -> None:
        if progress is not None:
            with open(progress, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "total": total, "logs": logs}) + "\n")
        if launcher_pid is not None and not _alive(launcher_pid):
            raise HangjiaError(f"The process that started this training job (pid {launcher_pid}) is gone; stopping.")

    return on_step


def _alive(pid: int) -> bool:
    if os.name != "posix":  # on Windows os.kill(pid, 0) would terminate the process
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
