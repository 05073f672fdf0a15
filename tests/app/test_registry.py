"""The model registry on SQLite and PostgreSQL: versions with lineage from real (tiny) builds, weights stored once,
promote / rollback / history, concurrent promotes from threads and processes, and what a revised document changes."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from hangjia.app.lineage import Provenance, provenance
from hangjia.app.registry import BLOBS, PRODUCTION, Registry, diff, parse_ref
from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace, sha256_file
from hangjia.stages.build import build
from tests.app.registry_worker import operate
from tests.paths import KESTREL_DOCS, REPO

REVISED = "dishwasher_error_codes.md"
ADDED = "## E99\n\nError E99 means the door sensor failed; replace the door switch (part DS-7).\n"


def tiny_build_config(tiny_model_dir: Path, docs: Path) -> ProjectConfig:
    """Two kestrel documents, a tiny model trained two steps: every stage runs, in seconds. Every pair is kept (no
    budget), so a revised document changes the training set's order and with it the weights."""
    cfg = ProjectConfig(docs=docs)
    cfg.train.base_model = str(tiny_model_dir)
    cfg.train.max_steps = 2
    cfg.train.max_length = 256
    cfg.select.quality = "none"
    cfg.select.paraphrases = 0
    cfg.select.raft = False
    cfg.select.general_ratio = 0
    cfg.select.semantic_dup_threshold = None
    cfg.select.budget = None
    return cfg


@pytest.fixture(scope="module")
def builds(tiny_model_dir, tmp_path_factory) -> dict:
    """One workspace built, then built again after a document was revised: each build's provenance, its weights
    copied out of the workspace (the second build replaces train/adapter), and the revised file's two hashes."""
    root = tmp_path_factory.mktemp("registry-builds")
    docs = root / "docs"
    docs.mkdir()
    for name in (REVISED, "spare_parts_prices.csv"):
        shutil.copy(KESTREL_DOCS / name, docs / name)
    cfg = tiny_build_config(tiny_model_dir, docs)
    ws = Workspace(root / "ws")
    found: dict = {"hashes": [], "ws": ws, "cfg": cfg}
    for n in (1, 2):
        if n == 2:
            (docs / REVISED).write_text((docs / REVISED).read_text(encoding="utf-8") + "\n" + ADDED, encoding="utf-8")
        build(ws, cfg, Console(quiet=True))
        made = provenance(ws, cfg.train.base_model)
        kept = shutil.copytree(made.weights.tuned, root / f"weights-{n}")
        found[n] = dataclasses.replace(made, weights=dataclasses.replace(made.weights, tuned=kept))
        found["hashes"].append(sha256_file(docs / REVISED))
    return found


def relabelled(made: Provenance, note: str) -> Provenance:
    """The same weights with another lineage (as if made by another run that happened to give the same weights)."""
    return dataclasses.replace(made, lineage={**made.lineage, "note": note})


def test_registering_twice_stores_the_weights_once(db_url, builds, tmp_path):
    with Registry(db_url, tmp_path) as registry:
        first = registry.register(builds[1], by="ana")
        assert first.created and first.version.version == 1 and first.version.ref == "domain@1"
        assert first.version.kind == "lora" and first.version.created_by == "ana"
        again = registry.register(builds[1], by="bo")
        assert not again.created and again.version.version == 1  # same weights, same lineage: the same version
        blobs = list((tmp_path / BLOBS).iterdir())
        assert [b.name for b in blobs] == [first.version.digest]
        assert registry.weights(first.version) == blobs[0]
        assert (blobs[0] / "adapter_model.safetensors").read_bytes() == (
            builds[1].weights.tuned / "adapter_model.safetensors"
        ).read_bytes()

        other = registry.register(relabelled(builds[1], "rerun"), alias="candidate")
        assert other.created and other.version.version == 2 and other.version.digest == first.version.digest
        assert len(list((tmp_path / BLOBS).iterdir())) == 1  # a new version, no new copy
        assert other.moved.alias == "candidate" and other.moved.to_version == 2
        newer = registry.register(builds[2])
        assert newer.version.version == 3 and newer.version.digest != first.version.digest
        assert len(list((tmp_path / BLOBS).iterdir())) == 2
        assert [v.version for v in registry.versions()] == [1, 2, 3]
        assert registry.resolve("domain@candidate").version == 2 and registry.resolve("3").version == 3
        assert not any(p.name.startswith(".") for p in (tmp_path / BLOBS).iterdir())  # no partial copy left


def test_an_evaluation_made_after_registering_fills_in_the_same_version(db_url, builds, tmp_path):
    unevaluated = dataclasses.replace(builds[1], evaluation=None)
    evaluated = dataclasses.replace(builds[1], evaluation={"results": {"conditions": []}, "gate": {"passed": True}})
    with Registry(db_url, tmp_path) as registry:
        assert registry.register(unevaluated).version.evaluation is None
        later = registry.register(evaluated)
        assert not later.created and later.evaluation_updated and later.version.version == 1
        assert registry.version(1).evaluation == evaluated.evaluation


def test_promote_rollback_and_the_history_that_keeps_every_move(db_url, builds, tmp_path):
    with Registry(db_url, tmp_path) as registry:
        for made in (builds[1], builds[2], relabelled(builds[2], "third")):
            registry.register(made)
        with pytest.raises(HangjiaError, match="never been set"):
            registry.rollback()
        first = registry.promote(1, by="ana", note="first release")
        assert (first.from_version, first.to_version, first.action) == (None, 1, "promote")
        with pytest.raises(HangjiaError, match="no earlier version"):
            registry.rollback()
        assert registry.promote(1) is None  # there already: no move, no event
        with pytest.raises(HangjiaError, match="no version 9") as missing:
            registry.promote(9)
        assert missing.value.status_code == 404
        registry.promote(3, by="bo")
        registry.promote(2, alias="candidate")
        back = registry.rollback(by="cy", note="answers got worse")
        assert (back.from_version, back.to_version, back.action) == (3, 1, "rollback")
        assert registry.aliases()[PRODUCTION].version == 1 and registry.aliases()["candidate"].version == 2
        forward = registry.rollback()  # undoing the rollback: forward again, as `kubectl rollout undo`
        assert (forward.from_version, forward.to_version) == (1, 3)
        moves = [(e.alias, e.action, e.from_version, e.to_version, e.by) for e in registry.history()]
        assert moves == [
            (PRODUCTION, "promote", None, 1, "ana"),
            (PRODUCTION, "promote", 1, 3, "bo"),
            ("candidate", "promote", None, 2, moves[2][4]),
            (PRODUCTION, "rollback", 3, 1, "cy"),
            (PRODUCTION, "rollback", 1, 3, moves[4][4]),
        ]
        assert [e.note for e in registry.history(alias=PRODUCTION)][:1] == ["first release"]
        with pytest.raises(HangjiaError, match="cannot name an alias"):
            registry.promote(1, alias="Prod uction")
    assert parse_ref("domain@12") == ("domain", 12) and parse_ref("candidate") == ("domain", "candidate")


def test_concurrent_promotes_from_threads_and_processes_keep_the_registry_consistent(db_url, builds, tmp_path):
    """3 threads and 3 processes move `production` 20 times each at once: every move lands as one event, each event
    starts where the previous one left the alias, and the alias ends where the last event put it."""
    with Registry(db_url, tmp_path) as registry:
        for made in (builds[1], builds[2], relabelled(builds[2], "third")):
            registry.register(made)
        registry.promote(1)
        start = time.time() + 3  # the processes' imports take a second or two
        worker = [sys.executable, "-m", "tests.app.registry_worker", db_url, str(tmp_path)]
        procs = [
            subprocess.Popen([*worker, str(seed), "20", str(start)], stdout=subprocess.PIPE, text=True, cwd=REPO)
            for seed in (1, 2, 3)
        ]
        results: list[dict] = []
        lock = threading.Lock()

        def run(seed: int) -> None:
            rng = random.Random(seed)
            time.sleep(max(0.0, start - time.time()))
            for _ in range(20):
                outcome = operate(registry, rng, 3)
                with lock:
                    results.append(outcome)

        threads = [threading.Thread(target=run, args=(seed,)) for seed in (11, 12, 13)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 0
            results += [json.loads(line) for line in out.splitlines()]
        assert len(results) == 120
        moved = [r for r in results if "id" in r]
        # Never "database is locked" or a constraint error. Two refusals are the registry's own answers: a promote
        # to where the alias is, and a rollback that wins the race to the very first move (nothing to go back to).
        first = "has not moved since; there is no earlier version to go back to"
        refused = {"no earlier version" if first in r["refused"] else r["refused"] for r in results if "refused" in r}
        assert refused <= {"already there", "no earlier version"}, refused
        events = registry.history(alias=PRODUCTION)
        assert len(events) == len(moved) + 1  # + the first promote
        assert sorted(e.id for e in events[1:]) == sorted(r["id"] for r in moved)
        for before, after in zip(events, events[1:], strict=False):
            assert after.from_version == before.to_version, (before.id, after.id)
        assert registry.aliases()[PRODUCTION].version == events[-1].to_version
        assert {e.to_version for e in events} <= {v.version for v in registry.versions()}
        assert len(moved) > 20 and any(r["action"] == "rollback" for r in moved)


def test_concurrent_registrations_number_versions_without_gaps(db_url, builds, tmp_path):
    with Registry(db_url, tmp_path) as registry:
        made = [relabelled(builds[1 + i % 2], f"run {i}") for i in range(8)]
        threads = [threading.Thread(target=registry.register, args=(m,)) for m in made]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [v.version for v in registry.versions()] == list(range(1, 9))
        assert len(list((tmp_path / BLOBS).iterdir())) == 2


def test_lineage_reaches_the_source_files_and_a_diff_shows_the_revised_document(db_url, builds, tmp_path):
    lineage = builds[1].lineage
    assert lineage["stage"] == "train" and lineage["sources"][REVISED] == builds["hashes"][0]
    assert set(lineage["sources"]) == {REVISED, "spare_parts_prices.csv"}
    assert set(lineage["datasets"]) == {"pairs", "chunks", "documents"}
    assert set(lineage["stages"]) == {"train", "select", "synth", "index", "ingest"}
    assert lineage["config"]["train"]["max_steps"] == 2 and "loss" in json.dumps(lineage["training"])
    assert lineage["code"]["hangjia"] and ("git" in lineage["code"]) == (REPO / ".git").exists()
    with Registry(db_url, tmp_path) as registry:
        old, new = registry.register(builds[1]).version, registry.register(builds[2]).version
        stored = registry.version(1).lineage
        assert stored["sources"] == lineage["sources"]  # as recorded, through the database's JSON
        change = diff(old, new)
    assert change["sources"] == {"added": [], "removed": [], "changed": [REVISED]}
    assert builds[2].lineage["sources"][REVISED] == builds["hashes"][1] != builds["hashes"][0]
    assert set(change["datasets"]) == {"pairs", "chunks", "documents"}  # each made from the revised text
    assert "ingest.docs" not in change["config"] and change["weights"]["digest"][0] == old.digest
    assert change["base"] == {}


def test_a_stale_stage_chain_is_refused(builds, tmp_path):
    """Data re-made after training: the model's lineage cannot be told, so it is not registered as if it could."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(builds["ws"].root, ws.root)
    manifest = ws.stage_dir("select") / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["fingerprint"] = "0" * 64
    manifest.write_text(json.dumps(edited))
    with pytest.raises(HangjiaError, match="earlier `select` output"):
        provenance(ws, builds["cfg"].train.base_model)


def test_a_workspace_without_a_trained_model_cannot_register(tmp_path, tiny_model_dir):
    with pytest.raises(HangjiaError, match="No trained model"):
        provenance(Workspace(tmp_path / "ws"), str(tiny_model_dir))


def test_blob_copies_are_whole_or_absent(builds, tmp_path):
    """A partial copy of weights never sits under the digest's name (it is renamed into place only once checked)."""
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    digest, stored = registry.store(builds[1].weights.tuned)
    again_digest, again = registry.store(builds[1].weights.tuned)
    assert (digest, stored) == (again_digest, again) and os.listdir(tmp_path / BLOBS) == [digest]
    registry.close()
