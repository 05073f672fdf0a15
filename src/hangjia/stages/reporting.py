"""What every stage shares: its result row for the summary table, progress bars, a trainer step reporter."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from hangjia.core.workspace import Workspace


def progress_bar(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=True,
    )


def step_reporter(progress, task, batch_size: int):
    """A trainer step callback that shows step, loss and samples/s on a rich progress bar."""
    started, first = time.time(), None

    def on_step(step: int, total: int, logs: dict[str, float]) -> None:
        nonlocal first
        first = step - 1 if first is None else first
        rate = (step - first) * batch_size / max(time.time() - started, 1e-9)
        loss = f"loss {logs['loss']:.3f}  " if "loss" in logs else ""
        progress.update(task, completed=step, total=total, status=f"{loss}{rate:.2f} samples/s")

    return on_step


def skipped(name: str, ws: Workspace) -> dict[str, Any]:
    manifest = ws.manifest(name) or {}
    return {"stage": name, "skipped": True, "counts": manifest.get("counts", {}), "dir": str(ws.stage_dir(name))}


def done(name: str, ws: Workspace) -> dict[str, Any]:
    return {**skipped(name, ws), "skipped": False}
