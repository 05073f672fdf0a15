"""`hangjia build` registers what it made, and `hangjia registry register | ls | show | diff | promote | rollback |
history` drive the registry, on SQLite and PostgreSQL (HANGJIA_DATABASE_URL)."""

from __future__ import annotations

import shutil

import pytest
import yaml

from hangjia.app.db.engine import URL_ENV
from hangjia.app.registry import Registry, register_build
from tests.app.test_registry import ADDED, REVISED, builds, relabelled  # noqa: F401 (builds: a fixture)
from tests.paths import KESTREL_DOCS
from tests.test_cli import run


def test_build_registers_then_promote_rollback_and_diff_from_the_cli(
    monkeypatch, capsys, tmp_path, db_url, tiny_model_dir
):
    monkeypatch.setenv(URL_ENV, db_url)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in (REVISED, "spare_parts_prices.csv"):
        shutil.copy(KESTREL_DOCS / name, docs / name)
    config = tmp_path / "hangjia.yaml"
    settings = {
        "docs": str(docs),
        "train": {"base_model": str(tiny_model_dir), "max_steps": 2, "max_length": 256},
        "select": {"quality": "none", "paraphrases": 0, "raft": False, "general_ratio": 0, "budget": None},
    }
    settings["select"]["semantic_dup_threshold"] = None
    config.write_text(yaml.safe_dump(settings))
    ws = str(tmp_path / "ws")

    code, out, err = run(monkeypatch, capsys, "build", "-w", ws, "-c", str(config))
    assert code == 0, err
    assert "registered domain@1" in out and "domain@candidate → domain@1" in out
    assert "domain@production → domain@1" in out and "no production yet and no gate configured" in out

    code, out, _ = run(monkeypatch, capsys, "registry", "register", "-w", ws, "-c", str(config))
    assert code == 0 and "domain@1 already holds these weights and lineage" in out

    (docs / REVISED).write_text((docs / REVISED).read_text(encoding="utf-8") + "\n" + ADDED, encoding="utf-8")
    code, out, err = run(monkeypatch, capsys, "build", "-w", ws, "-c", str(config))
    assert code == 0, err
    assert "registered domain@2" in out and "domain@candidate → domain@2 (was 1)" in out
    assert "production stays at version 1" in out

    code, out, _ = run(monkeypatch, capsys, "registry", "ls", "-w", ws, "-c", str(config))
    assert code == 0
    rows = [line for line in out.splitlines() if "domain@" in line]
    assert "production" in rows[0] and "candidate" in rows[1] and "documents@" in rows[0]

    code, out, _ = run(monkeypatch, capsys, "registry", "diff", "-w", ws, "-c", str(config), "production", "candidate")
    assert code == 0 and "domain@1 → domain@2" in out
    assert f"documents changed: {REVISED}" in out and "datasets documents: documents@" in out

    code, out, _ = run(monkeypatch, capsys, "registry", "show", "-w", ws, "-c", str(config), "2")
    assert code == 0 and "domain@2 (candidate)" in out and "2 files" in out and "train.steps = 2" in out
    code, out, _ = run(monkeypatch, capsys, "registry", "show", "-w", ws, "-c", str(config), "1", "--lineage")
    assert code == 0 and REVISED in out and '"sources"' in out

    code, out, _ = run(monkeypatch, capsys, "registry", "promote", "-w", ws, "-c", str(config), "2", "--by", "ana")
    assert code == 0 and "domain@production → domain@2 (was domain@1)" in out
    code, out, _ = run(monkeypatch, capsys, "registry", "rollback", "-w", ws, "-c", str(config), "--note", "worse")
    assert code == 0 and "domain@production → domain@1 (was domain@2)" in out
    code, out, _ = run(monkeypatch, capsys, "registry", "history", "-w", ws, "-c", str(config))
    assert code == 0 and "ana" in out and "worse" in out and out.count("promote") >= 3 and "rollback" in out

    code, _, err = run(monkeypatch, capsys, "registry", "promote", "-w", ws, "-c", str(config), "7")
    assert code == 2 and "no version 7" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "registry", "rollback", "-w", ws, "-c", str(config), "--alias", "nightly")
    assert code == 2 and "never been set" in err


@pytest.mark.parametrize("gate_passed", [False, True, None])
def test_a_build_promotes_only_the_first_version_and_only_past_its_gate(gate_passed, tmp_path, builds):  # noqa: F811
    """register_build, the policy `hangjia build` runs: candidate always; production only when there is none yet and
    the gate passed (None: no gate configured); never moved once set."""
    with Registry(f"sqlite:///{tmp_path / 'r.db'}", tmp_path) as registry:
        done, moved, why = register_build(registry, builds[1], gate_passed)
        assert registry.aliases()["candidate"].version == 1
        assert (moved is not None) == (gate_passed is not False) and ("gate failed" in why) == (gate_passed is False)
        done, moved, why = register_build(registry, relabelled(builds[2], "later"), True)
        assert done.version.version == 2 and registry.aliases()["candidate"].version == 2
        if gate_passed is False:  # still no production: the first version past its gate becomes it
            assert moved.to_version == 2
        else:
            assert moved is None and "production stays at version 1" in why
