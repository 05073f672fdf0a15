"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and they do catch what they are there to catch.

Both tests run the real `lint-imports` (the one `make lint` and `make test` run) in a subprocess: the second points
it at a copy of the package with imports planted in it, and checks the broken contracts and the lines it names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> tuple[int, str]:
    """Runs `lint-imports` in cwd (it reads cwd/pyproject.toml and finds `hangjia` first on pythonpath)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return done.returncode, ANSI.sub("", done.stdout + done.stderr)


def test_the_import_contracts_hold():
    code, out = lint_imports(REPO)
    assert code == 0, out
    assert "Layers: imports point down KEPT" in out
    assert "No import cycles inside a layer KEPT" in out
    assert "core and corpus import no ML framework KEPT" in out


def plant(path: Path, line: str) -> int:
    """Appends an import to a module and returns its line number (as lint-imports reports it)."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text + ("" if text.endswith("\n") else "\n") + line + "\n", encoding="utf-8")
    return len(path.read_text(encoding="utf-8").splitlines())


def test_planted_imports_break_the_contracts(tmp_path):
    copy = tmp_path / "src" / "hangjia"
    shutil.copytree(REPO / "src" / "hangjia", copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    upward = plant(copy / "core" / "errors.py", "import hangjia.stages.build  # noqa: E402, F401")
    # chunk imports documents; documents importing chunk back closes a circle inside the corpus layer.
    plant(copy / "corpus" / "documents.py", "import hangjia.corpus.chunk  # noqa: E402, F401")
    framework = plant(copy / "corpus" / "text.py", "import torch  # noqa: E402, F401")

    code, out = lint_imports(tmp_path, pythonpath=tmp_path / "src")

    assert code == 1, out
    assert "Layers: imports point down BROKEN" in out
    assert "hangjia.core is not allowed to import hangjia.stages:" in out
    assert f"- hangjia.core.errors -> hangjia.stages.build (l.{upward})" in out
    assert "No import cycles inside a layer BROKEN" in out
    assert "No cycles are allowed in hangjia.corpus." in out
    assert re.search(r"- \.documents -> \.chunk \(1 import\)|- \.chunk -> \.documents \(\d+ imports?\)", out), out
    assert "core and corpus import no ML framework BROKEN" in out
    assert f"hangjia.corpus.text -> torch (l.{framework})" in out
