"""The CLI's fast paths, in-process through `main()` (the real entry point, error handling included)."""

import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import yaml

from hangjia.cli import app, main
from hangjia.core.config import load_config


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["hangjia", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main()
    captured = capsys.readouterr()
    return exit_.value.code or 0, captured.out, captured.err


def subcommands(command: Any) -> dict[str, Any]:
    """A group's commands by name; none for a plain command. (Typer's groups are click groups or, since Typer
    vendors click, its own TyperGroup: both keep them in `.commands`.)"""
    return getattr(command, "commands", None) or {}


def walk(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under a group, sub-apps' commands included (`data ls` is ("data", "ls")), groups too."""
    for name, command in sorted(subcommands(group).items()):
        yield (*path, name), command
        yield from walk(command, (*path, name))


def first_line(command: Any) -> str:
    """The first line of the help --help shows: the docstring, or a sub-app's help=."""
    return (command.help or "").strip().partition("\n")[0].strip()


def test_walk_finds_nested_commands_and_catches_one_without_a_docstring():
    toy = typer.Typer()
    sub = typer.Typer(help="Sub-commands.")
    toy.add_typer(sub, name="sub")

    @toy.command()
    def documented() -> None:
        """Does a thing."""

    @sub.command("bare")
    def bare() -> None:
        pass

    found = {path: first_line(command) for path, command in walk(typer.main.get_command(toy))}
    assert found == {("documented",): "Does a thing.", ("sub",): "Sub-commands.", ("sub", "bare"): ""}


def test_every_command_has_help(monkeypatch, capsys):
    """Every command the app has, found in the app itself (a new one is checked without touching this test):
    documented, listed in its group's --help, and its own --help exits 0 and shows its docstring's first line."""
    root = typer.main.get_command(app)
    commands = [((), root), *walk(root)]
    assert {("data", "ls"), ("eval",), ("version",)} <= {path for path, _ in commands}
    undocumented = [" ".join(path) for path, command in commands if not first_line(command)]
    assert not undocumented, f"commands without a docstring: {undocumented}"
    for path, command in commands:
        code, out, _ = run(monkeypatch, capsys, *path, "--help")
        words = " ".join(out.split())  # help text is re-wrapped to the terminal's width
        assert code == 0 and "Usage" in out, (path, out)
        assert " ".join(first_line(command).split()) in words, (path, out)
        for name in subcommands(command):
            assert name in out, (path, name, out)


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


@pytest.fixture
def chat_workspace(tmp_path, tiny_model_dir):
    """A workspace with nothing built yet, whose base model is the tiny one and said to write English."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hangjia.yaml").write_text(f"train:\n  base_model: {tiny_model_dir}\nserve:\n  languages: [en]\n")
    return ws


def chat(monkeypatch, capsys, ws, lines: list[str], *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in [*lines, ""])))
    return run(monkeypatch, capsys, "chat", "-w", str(ws), "--max-tokens", "4", *args)


def test_chat_without_a_trained_model_names_hangjia_build(monkeypatch, capsys, chat_workspace):
    code, _, err = chat(monkeypatch, capsys, chat_workspace, ["What does E24 mean?"])
    assert code == 2 and "not trained in this workspace yet" in err and "hangjia build" in err
    assert "Traceback" not in err


def test_chat_shows_the_cited_sources_else_the_retrieved_ones_and_notes(
    monkeypatch, capsys, chat_workspace, tiny_model_dir, tmp_path
):
    from hangjia.llm.generation import Engine
    from tests.app.conftest import answering, make_index

    engine = Engine(tiny_model_dir, None, make_index(tmp_path / "index"))
    monkeypatch.setattr(Engine, "from_workspace", classmethod(lambda cls, *args, **kwargs: engine))
    question = "How do I reset the DW4500 dishwasher?"

    answering(monkeypatch, "Clean the filter, then hold START [1].")
    code, out, err = chat(monkeypatch, capsys, chat_workspace, [question], "--model", "base", "--rag")
    assert code == 0, err
    assert "base> Clean the filter, then hold START [1]." in out
    cited = '[1] dishwasher_error_codes.md · Main  "Error E24 means the drain is blocked; clean the filter and reset'
    assert cited in err and "retrieved:" not in err and "note:" not in err

    answering(monkeypatch, "Hold START.")
    code, out, err = chat(
        monkeypatch, capsys, chat_workspace, [question, "DW4500洗碗机怎么复位？"], "--model", "base", "--rag"
    )
    assert code == 0, err
    assert err.count("retrieved:") == 2 and err.count("[1] dishwasher_error_codes.md · Main") == 2
    assert err.count("note:") == 1
    assert f"The model base ({tiny_model_dir.name}) writes English; answers to Chinese questions may be poor." in err
