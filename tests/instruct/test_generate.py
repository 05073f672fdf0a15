"""`hangjia synth` with a teacher generator, end to end through the CLI against a scripted OpenAI-compatible
endpoint on loopback: the dry run sends nothing, the run makes grounded Self-QA pairs, a rerun is free (cache)."""

from __future__ import annotations

import json

import yaml

from hangjia import cli
from hangjia.instruct.selfqa import QUESTION_SYSTEM
from tests.fake_teacher import fake_endpoint

DOC = (
    "# Error codes\n\n"
    "E24 means the drain pump is blocked. Clean the pump cover and restart the programme.\n\n"
    "E11 means a water inlet fault. Check that the tap is open and the inlet hose is not kinked.\n"
)


def scripted(messages):
    if messages[0]["content"] == QUESTION_SYSTEM:
        return "1. What does error code E24 mean on the dishwasher?\n2. What does error code E11 mean?"
    question = messages[-1]["content"].split("Question: ")[1]  # the passage above it names both codes
    return "E24 means the drain pump is blocked." if "E24" in question else "E11 means a water inlet fault."


def run(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["hangjia", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_synth_with_an_endpoint_teacher_dry_run_then_cached(monkeypatch, capsys, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "codes.md").write_text(DOC)
    ws = str(tmp_path / "ws")
    with fake_endpoint(scripted) as server:
        config = tmp_path / "hangjia.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "docs": str(docs),
                    "teacher": {"kind": "endpoint", "base_url": server.url, "model": "fake-teacher", "max_retries": 0},
                    "synth": {"generators": ["self_qa"], "questions_per_chunk": 2, "decontaminate": False},
                }
            )
        )
        code, out = run(monkeypatch, capsys, "ingest", "-w", ws, "--config", str(config))
        assert code == 0, out
        code, out = run(monkeypatch, capsys, "synth", "-w", ws, "--config", str(config), "--dry-run")
        assert code == 0 and "dry run, nothing sent" in out and "requests=" in out, out
        assert server.requests == []  # the estimate costs nothing

        code, out = run(monkeypatch, capsys, "synth", "-w", ws, "--config", str(config))
        assert code == 0, out
        sent = len(server.requests)
        assert sent >= 3  # questions for the chunk, then one answer per question
        pairs = [json.loads(line) for line in (tmp_path / "ws" / "synth" / "pairs.jsonl").read_text().splitlines()]
        report = json.loads((tmp_path / "ws" / "synth" / "report.json").read_text())
        assert {(p["generator"], p["answer"]) for p in pairs} == {
            ("self_qa", "E24 means the drain pump is blocked."),
            ("self_qa", "E11 means a water inlet fault."),
        }, report["drops"]
        counts = json.loads((tmp_path / "ws" / "synth" / "manifest.json").read_text())["counts"]
        assert counts["teacher_sent"] == sent and counts["teacher_failures"] == 0

        code, out = run(monkeypatch, capsys, "synth", "-w", ws, "--config", str(config), "--force")
        assert code == 0 and len(server.requests) == sent  # every reply came from the cache
