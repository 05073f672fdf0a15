"""`hangjia registry export-mlflow` against a real local MLflow tracking store (SQLite): runs with params, metrics,
tags and the lineage artifact, registered model versions and aliases; exporting again adds only what changed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hangjia.app.db.engine import URL_ENV
from hangjia.app.registry import Registry
from tests.app.test_registry import builds  # noqa: F401 (a fixture)
from tests.test_cli import run

mlflow = pytest.importorskip("mlflow")

EVALUATION = {
    "results": {
        "conditions": [{"model": "domain", "rag": True, "accuracy": 0.5, "f1": 0.6, "rouge_l": 0.4}],
        "choices": [{"set": "domain mcq", "model": "domain", "n": 30, "acc": 0.4, "acc_norm": 0.4}],
    },
    "gate": {"passed": True, "checks": []},
}


def test_export_to_a_local_mlflow_store_then_again_after_a_promote(monkeypatch, capsys, tmp_path, builds):  # noqa: F811
    ws = tmp_path / "ws"
    url = f"sqlite:///{ws / 'hangjia.db'}"
    monkeypatch.setenv(URL_ENV, url)
    tracking = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    with Registry(url, ws) as registry:
        registry.register(dataclasses.replace(builds[1], evaluation=EVALUATION), alias="production", by="ana")
        registry.register(builds[2], alias="candidate", by="bo")

    code, out, err = run(monkeypatch, capsys, "registry", "export-mlflow", "-w", str(ws), "--tracking-uri", tracking)
    assert code == 0, err
    assert "2 versions (2 new)" in out and "alias production → model version 1" in out

    client = mlflow.MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.get_experiment_by_name("hangjia")
    runs = {r.data.tags["hangjia.version"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"domain@1", "domain@2"}
    first = runs["domain@1"]
    assert first.info.run_name == "domain@1" and first.data.tags["mlflow.user"] == "ana"
    assert first.data.params["train.max_steps"] == "2" and first.data.params["data.documents"].startswith("documents@")
    assert first.data.metrics["eval.domain.rag_on.accuracy"] == 0.5 and first.data.metrics["eval.gate.passed"] == 1
    assert "train.final_train_loss" in first.data.metrics
    assert "eval.domain.rag_on.accuracy" not in runs["domain@2"].data.metrics  # domain@2 was not evaluated
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=first.info.run_id, artifact_path="lineage.json", dst_path=str(tmp_path / "got"), tracking_uri=tracking
    )
    lineage = json.loads(Path(downloaded).read_text())
    assert lineage["sources"] == builds[1].lineage["sources"]
    production = client.get_model_version_by_alias("domain", "production")
    assert production.tags["hangjia.version"] == "domain@1" and production.run_id == first.info.run_id
    assert client.get_model_version_by_alias("domain", "candidate").tags["hangjia.version"] == "domain@2"
    assert (tmp_path / "mlflow" / "mlflow-artifacts").is_dir()  # artifacts beside the store, not in the cwd

    with Registry(url, ws) as registry:
        registry.promote(2)
    code, out, _ = run(monkeypatch, capsys, "registry", "export-mlflow", "-w", str(ws), "--tracking-uri", tracking)
    assert code == 0 and "2 versions (0 new)" in out
    assert len(client.search_runs([experiment.experiment_id])) == 2
    assert len(client.search_model_versions("name = 'domain'")) == 2
    assert client.get_model_version_by_alias("domain", "production").tags["hangjia.version"] == "domain@2"
