import json

import pytest

from hangjia.core.workspace import Workspace, fingerprint, sha256_tree


def test_stage_writes_manifest_and_is_current(tmp_path):
    ws = Workspace(tmp_path / "ws")
    inputs, config = {"docs": "abc"}, {"chunk_words": 100}
    assert not ws.is_current("ingest", inputs, config)
    with ws.stage("ingest", inputs, config) as run:
        (run.dir / "out.txt").write_text("hello")
        run.counts["documents"] = 1
    manifest = ws.manifest("ingest")
    assert manifest["fingerprint"] == fingerprint(inputs, config)
    assert manifest["counts"] == {"documents": 1}
    assert manifest["config"] == config and "torch" in manifest["packages"]
    assert (ws.stage_dir("ingest") / "out.txt").read_text() == "hello"
    assert ws.is_current("ingest", inputs, config)
    assert not ws.is_current("ingest", inputs, {"chunk_words": 99})
    assert not ws.is_current("ingest", {"docs": "abd"}, config)


def test_crash_mid_stage_keeps_committed_output(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.stage("synth", {"x": "1"}, {}) as run:
        (run.dir / "pairs.jsonl").write_text("old")
    with pytest.raises(RuntimeError), ws.stage("synth", {"x": "2"}, {}) as run:
        (run.dir / "pairs.jsonl").write_text("half-writ")
        raise RuntimeError("killed")
    assert (ws.stage_dir("synth") / "pairs.jsonl").read_text() == "old"
    assert json.loads((ws.stage_dir("synth") / "manifest.json").read_text())["inputs"] == {"x": "1"}
    assert not (ws.root / ".staging" / "synth").exists()


def test_recovers_a_commit_interrupted_between_renames(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with ws.stage("train", {}, {}) as run:
        (run.dir / "a").write_text("1")
    # Simulate a crash after moving the old output aside and before moving the new one in.
    ws.stage_dir("train").rename(ws.root / ".staging" / "train.old")
    ws = Workspace(ws.root)
    assert (ws.stage_dir("train") / "a").read_text() == "1"


def test_tree_hash_sees_content_and_names_not_hidden_files(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    first = sha256_tree(tmp_path)
    (tmp_path / ".DS_Store").write_text("junk")
    assert sha256_tree(tmp_path) == first
    (tmp_path / "a.txt").write_text("y")
    assert sha256_tree(tmp_path) != first


def test_a_resumable_stage_keeps_its_partial_output_for_the_same_inputs_only(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(RuntimeError), ws.stage("train", {"a": "1"}, {"lr": 1}, keep_partial=True) as run:
        (run.dir / "checkpoint-4").mkdir()
        raise RuntimeError("killed mid-run")
    partial = ws.root / ".staging" / "train" / "checkpoint-4"
    assert partial.is_dir() and ws.manifest("train") is None  # nothing committed, the checkpoint kept

    with pytest.raises(RuntimeError), ws.stage("train", {"a": "1"}, {"lr": 1}, keep_partial=True, resume=True) as run:
        assert (run.dir / "checkpoint-4").is_dir()  # same inputs and config: resumed from where it stopped
        raise RuntimeError("again")
    with ws.stage("train", {"a": "1"}, {"lr": 2}, keep_partial=True, resume=True) as run:
        assert not (run.dir / "checkpoint-4").exists()  # another config: a fresh start, never a mixed run
    assert ws.manifest("train")["config"] == {"lr": 2} and not (ws.stage_dir("train") / ".fingerprint").exists()

    with pytest.raises(RuntimeError), ws.stage("index", {}, {}) as run:
        raise RuntimeError("not resumable")
    assert not (ws.root / ".staging" / "index").exists()
