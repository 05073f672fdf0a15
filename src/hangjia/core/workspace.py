"""On-disk layout of a project and the stage manifests that make re-runs cheap and crashes safe.

```
WS/
  hangjia.yaml      optional project config (`hangjia init` writes a commented one)
  datasets/         versioned Parquet datasets (documents, chunks, pairs), see corpus/datasets.py
  cache/            teacher and judge replies (SQLite), so a rerun sends nothing
  <stage>/          one folder per stage in STAGES, e.g. train/adapter, eval/results.json (README: workspace layout)
  .staging/         stage outputs being written; moved into place only when complete
```
Every stage directory holds a `manifest.json` (fingerprint of inputs + config, resolved config,
package versions, code version, counts, duration). A stage whose fingerprint is unchanged is skipped. A stage
writes into `.staging/` and is renamed into place at the end, so a crash mid-write leaves the
previous, committed output intact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from hangjia.core.errors import HangjiaError

# Every stage folder a workspace may hold, in the order `hangjia build` and the side commands make them.
STAGES = ("ingest", "index", "synth", "select", "pretrain", "train", "dpo", "reward", "tune", "export", "eval")
_TRACKED_PACKAGES = ("hangjia", "torch", "transformers", "trl", "peft", "bm25s")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(root: Path) -> str:
    """Hash of every file's relative path and content under `root` (hidden files ignored)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(f"{rel.as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def fingerprint(inputs: dict[str, str], config: dict[str, Any]) -> str:
    blob = json.dumps({"inputs": inputs, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def code_version() -> dict[str, Any]:
    """The Hangjia that runs: its version and, when it runs from a git checkout, the commit and whether tracked files
    differ from it (`dirty`)."""
    from hangjia import __version__

    version: dict[str, Any] = {"hangjia": __version__}
    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return version
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        changes = subprocess.run(status, cwd=source, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git here
        return version
    return version | {"git": head.stdout.strip(), "dirty": bool(changes.stdout.strip())}


@dataclass
class StageRun:
    """An open stage: write outputs into `dir`, fill `counts`; committed when the block ends cleanly."""

    name: str
    dir: Path
    counts: dict[str, Any] = field(default_factory=dict)


class Workspace:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise HangjiaError(f"Workspace {self.root} is a file, not a folder; pick another --workspace.")
        self._recover()

    @property
    def config_path(self) -> Path:
        return self.root / "hangjia.yaml"

    def stage_dir(self, name: str) -> Path:
        return self.root / name

    def manifest(self, name: str) -> dict[str, Any] | None:
        path = self.stage_dir(name) / "manifest.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def require(self, name: str, hint: str) -> dict[str, Any]:
        """The manifest of a completed stage, or a clear error saying which command makes it."""
        manifest = self.manifest(name)
        if manifest is None:
            raise HangjiaError(f"Stage '{name}' has not run in workspace {self.root}; run {hint} first.")
        return manifest

    def is_current(self, name: str, inputs: dict[str, str], config: dict[str, Any]) -> bool:
        manifest = self.manifest(name)
        return manifest is not None and manifest.get("fingerprint") == fingerprint(inputs, config)

    @contextmanager
    def stage(
        self,
        name: str,
        inputs: dict[str, str],
        config: dict[str, Any],
        *,
        keep_partial: bool = False,
        resume: bool = False,
    ) -> Iterator[StageRun]:
        """Run a stage into a staging folder; on success write its manifest and swap it into place.

        keep_partial: a failed run leaves its staging folder (e.g. training checkpoints) instead of deleting it;
        resume: start from what a failed (or killed) run with the same inputs and config left there."""
        staging_root = self.root / ".staging"
        staging = staging_root / name
        marker = staging / ".fingerprint"
        fp = fingerprint(inputs, config)
        if not (resume and marker.is_file() and marker.read_text() == fp):
            shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True, exist_ok=True)
        marker.write_text(fp)
        run = StageRun(name=name, dir=staging)
        started = time.time()
        try:
            yield run
        except BaseException:
            if not keep_partial:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        marker.unlink()
        manifest = {
            "stage": name,
            "fingerprint": fp,
            "inputs": inputs,
            "config": config,
            "packages": package_versions(),
            "code": code_version(),
            "counts": run.counts,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_s": round(time.time() - started, 2),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        self._commit(staging, self.stage_dir(name))

    def _commit(self, staging: Path, target: Path) -> None:
        old = self.root / ".staging" / f"{target.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def _recover(self) -> None:
        """Finish a commit that a crash interrupted between its two renames."""
        staging_root = self.root / ".staging"
        if not staging_root.is_dir():
            return
        for old in staging_root.glob("*.old"):
            target = self.stage_dir(old.name.removesuffix(".old"))
            if not target.exists():
                old.rename(target)
