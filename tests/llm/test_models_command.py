"""`hangjia models` tells what each name means, through the resolver: after dpo and with a fully tuned model too."""

from __future__ import annotations

import sys

import pytest

from hangjia import cli
from hangjia.cli import main
from hangjia.core.workspace import Workspace
from tests.llm.test_weights import _adapter, _base, _dpo, _train


def models_table(monkeypatch, capsys, ws: Workspace, *extra: str) -> str:
    monkeypatch.setattr(sys, "argv", ["hangjia", "models", "--workspace", str(ws.root), *extra])
    monkeypatch.setattr(cli.out, "width", 400)  # a wide terminal: tmp paths are long and cells would wrap
    with pytest.raises(SystemExit) as exit_:
        main()
    assert (exit_.value.code or 0) == 0
    return capsys.readouterr().out


def test_models_lists_the_dpo_adapter_once_dpo_ran(monkeypatch, capsys, tmp_path):
    base, ws = _base(tmp_path), Workspace(tmp_path / "ws")
    _train(ws, base)
    out = models_table(monkeypatch, capsys, ws)
    assert "LoRA adapter" in out and str(ws.stage_dir("train") / "adapter") in out
    _dpo(ws)
    out = models_table(monkeypatch, capsys, ws)
    assert str(ws.stage_dir("dpo") / "adapter") in out and "DPO loss" in out
    assert str(ws.stage_dir("train") / "adapter") not in out


def test_models_says_full_model_and_shows_production(monkeypatch, capsys, tmp_path):
    base, ws = _base(tmp_path), Workspace(tmp_path / "ws")
    _train(ws, base, full=True)
    _adapter(tmp_path / "in-service")
    (ws.root / "hangjia.yaml").write_text(f"eval:\n  production: {tmp_path / 'in-service'}\n")
    out = models_table(monkeypatch, capsys, ws)
    assert "full model" in out and "LoRA adapter" not in out.split("production")[0]
    assert "production" in out and str(tmp_path / "in-service") in out
