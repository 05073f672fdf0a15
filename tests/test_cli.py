"""The CLI's fast paths, in-process through `main()` (the real entry point, error handling included)."""

import sys

import pytest
import yaml

from hangjia.cli import main
from hangjia.core.config import load_config


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["hangjia", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main()
    captured = capsys.readouterr()
    return exit_.value.code or 0, captured.out, captured.err


def test_every_command_has_help(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0
    commands = ["init", "ingest", "synth", "select", "train", "tune", "eval", "build", "serve", "chat", "models"]
    for command in commands:
        assert command in out
    for command in commands:
        code, out, _ = run(monkeypatch, capsys, command, "--help")
        assert code == 0 and "Usage" in out and len(out.splitlines()) > 5


def test_init_writes_a_config_that_loads(monkeypatch, capsys, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    code, out, _ = run(monkeypatch, capsys, "init", str(tmp_path / "ws"), "--docs", str(docs))
    assert code == 0 and "hangjia build" in out
    cfg = load_config(tmp_path / "ws" / "hangjia.yaml")
    assert cfg.docs == docs.resolve()
    assert yaml.safe_load((tmp_path / "ws" / "hangjia.yaml").read_text())["train"]["lora_r"] == 16
    code, _, err = run(monkeypatch, capsys, "init", str(tmp_path / "ws"))
    assert code == 2 and "already exists" in err


def test_user_mistakes_are_one_sentence_not_a_traceback(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "build", "--workspace", str(tmp_path / "ws"))
    assert code == 2 and "--docs" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "synth", "--workspace", str(tmp_path / "ws"))
    assert code == 2 and "hangjia ingest" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(monkeypatch, capsys, "ingest", "-w", str(tmp_path / "ws"), "--docs", str(tmp_path / "empty"))
    assert code == 2 and "Traceback" not in err and str(tmp_path / "empty") in err
    code, _, err = run(monkeypatch, capsys, "eval", "-w", str(tmp_path / "ws"))
    assert code == 2 and "--questions" in err


def test_ingest_and_synth_report_skips_and_rerun_is_a_no_op(monkeypatch, capsys, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Codes\n\nE24 - Drain pump blocked\n\nThe hose must be 900 mm high.\n")
    (docs / "broken.json").write_text("{not json")
    ws = str(tmp_path / "ws")
    code, out, _ = run(monkeypatch, capsys, "ingest", "-w", ws, "--docs", str(docs))
    assert code == 0 and "documents=1" in out and "broken.json" in out
    code, out, _ = run(monkeypatch, capsys, "ingest", "-w", ws, "--docs", str(docs))
    assert out.count("unchanged, skipped") == 2
    code, out, _ = run(monkeypatch, capsys, "synth", "-w", ws)
    assert code == 0 and "pairs=" in out
    (docs / "more.md").write_text("# More codes\n\nP01: Low water flow. Check the strainer and the circulation pump.\n")
    (docs / "tiny.md").write_text("P02\n")
    code, out, _ = run(monkeypatch, capsys, "ingest", "-w", ws, "--docs", str(docs))
    assert "documents=2" in out and "unchanged" not in out
    assert "tiny.md: filtered: too short" in out


def test_data_commands_list_show_diff_and_trace_versions(monkeypatch, capsys, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "guide.md").write_text("# Codes\n\nE24 - Drain pump blocked\n\nThe hose must be 900 mm high.\n")
    ws = str(tmp_path / "ws")
    run(monkeypatch, capsys, "ingest", "-w", ws, "--docs", str(docs))
    (docs / "guide.md").write_text("# Codes\n\nE24 - Drain pump blocked\n\nThe hose must be 1000 mm high.\n")
    run(monkeypatch, capsys, "ingest", "-w", ws, "--docs", str(docs))
    code, out, _ = run(monkeypatch, capsys, "data", "ls", "-w", ws)
    assert code == 0 and out.count("chunks") >= 2 and out.count("documents") >= 2
    from hangjia.corpus.datasets import DatasetStore

    old, new = DatasetStore(tmp_path / "ws" / "datasets").versions("chunks")
    code, out, _ = run(monkeypatch, capsys, "data", "diff", "-w", ws, old.ref, new.ref)
    assert code == 0 and "added: 1" in out and "removed: 1" in out
    code, out, _ = run(monkeypatch, capsys, "data", "show", "-w", ws, "chunks@latest")
    assert code == 0 and "1000 mm" in out
    code, out, _ = run(monkeypatch, capsys, "data", "lineage", "-w", ws, new.ref)
    assert code == 0 and "guide.md" in out and "documents@" in out
    code, _, err = run(monkeypatch, capsys, "data", "show", "-w", ws, "nope")
    assert code == 2 and "No dataset named 'nope'" in err
