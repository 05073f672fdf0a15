"""`hangjia registry export-mlflow`: the registry as a team that runs MLflow sees it in the MLflow UI (needs the
`mlflow` extra: `pip install 'hangjia[mlflow]'`, mlflow-skinny, ~90 MB installed with what it pulls in).

Each registered version becomes one MLflow run (named `domain@3`, in experiment `hangjia`) and one version of the
registered model of the same name:

    params     the resolved config of every stage that made it (`train.lora_r`, `select.budget`, ...), its kind, base
               model and dataset versions (`data.pairs`, ...)
    metrics    training (`train.final_train_loss`, ...) and evaluation (`eval.domain.rag_on.accuracy`, ..., the gate:
               `eval.gate.passed` 1 or 0)
    tags       `hangjia.version`, weights / lineage / base digests, code version (hangjia version, git commit),
               who registered it; the lineage itself as the artifact lineage.json
    aliases    every Hangjia alias set on the MLflow version it maps to (`MlflowClient.set_registered_model_alias`)

Exporting again adds only what is new (versions, metrics, alias moves), so it can run after every build or on a
schedule. MLflow numbers its versions itself: `hangjia.version` on each says which Hangjia version it is. Hangjia's
own tables stay the store (app/registry.py says why); this is a one-way copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from hangjia.app.lineage import flatten
from hangjia.app.registry import Registry, evaluation_metrics
from hangjia.core.errors import HangjiaError
from hangjia.llm.weights import DOMAIN

VERSION_TAG = "hangjia.version"
PARAM_VALUE_LIMIT = 6000  # MLflow refuses longer parameter values
BATCH = 100  # MLflow's log_batch takes at most 100 params a call


@dataclass
class Exported:
    """What one export did."""

    experiment: str
    runs: dict[str, str] = field(default_factory=dict)
    """Hangjia version → its MLflow run id."""
    versions: dict[str, str] = field(default_factory=dict)
    """Hangjia version → its MLflow model version."""
    created: list[str] = field(default_factory=list)
    """The Hangjia versions exported for the first time now."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Alias → the MLflow model version it is set on."""


def export_mlflow(registry: Registry, tracking_uri: str, experiment: str = "hangjia", model: str = DOMAIN) -> Exported:
    """Copy `model`'s versions and aliases from the registry into the MLflow tracking server or store at
    `tracking_uri` (http://..., sqlite:///PATH, file:PATH); see the module docstring."""
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise HangjiaError("The MLflow export needs MLflow: pip install 'hangjia[mlflow]' (mlflow-skinny).") from None
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(experiment, artifact_location=_artifact_location(tracking_uri))
    )
    _ensure_registered_model(client, model)
    done = Exported(experiment)
    for version in registry.versions(model):
        run_id, created = _run(client, experiment_id, version, registry)
        done.runs[version.ref] = run_id
        if created:
            done.created.append(version.ref)
        done.versions[version.ref] = _model_version(client, model, version, run_id, registry)
    for alias, row in registry.aliases(model).items():
        target = done.versions[f"{model}@{row.version}"]
        client.set_registered_model_alias(model, alias, target)
        done.aliases[alias] = target
    return done


def _artifact_location(tracking_uri: str) -> str | None:
    """For a local store, artifacts beside its file (MLflow's default is ./mlruns in whatever folder runs this); a
    tracking server picks its own."""
    if tracking_uri.startswith("sqlite:"):
        database = make_url(tracking_uri).database
        return (Path(database).expanduser().resolve().parent / "mlflow-artifacts").as_uri() if database else None
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        root = Path(tracking_uri.removeprefix("file://").removeprefix("file:")).expanduser().resolve()
        return (root / "artifacts").as_uri()
    return None


def _ensure_registered_model(client, model: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(model, description="Hangjia's domain model (exported by hangjia registry).")


def _run(client, experiment_id: str, version, registry: Registry) -> tuple[str, bool]:
    """The version's MLflow run: found by its tag, else created with its params, tags and lineage; its metrics
    brought up to date either way (an evaluation may have come later)."""
    from mlflow.entities import Metric, Param

    query = f"tags.`{VERSION_TAG}` = '{version.ref}'"
    existing = client.search_runs([experiment_id], filter_string=query, max_results=1)
    created = not existing
    started = int(version.created_at.timestamp() * 1000)
    if created:
        run = client.create_run(experiment_id, start_time=started, tags=_tags(version), run_name=version.ref)
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in _params(version).items()]
        for start in range(0, len(params), BATCH):
            client.log_batch(run_id, params=params[start : start + BATCH])
        client.log_dict(run_id, version.lineage, "lineage.json")
        logged: dict[str, float] = {}
    else:
        run_id = existing[0].info.run_id
        logged = existing[0].data.metrics
    metrics = [Metric(k, v, started, 0) for k, v in _metrics(version).items() if logged.get(k) != v]
    for start in range(0, len(metrics), BATCH * 10):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH * 10])
    if created:
        client.set_terminated(run_id, end_time=started)
    elif metrics:
        client.set_tag(run_id, "hangjia.evaluation", "updated")
    return run_id, created


def _model_version(client, model: str, version, run_id: str, registry: Registry) -> str:
    """The MLflow model version made from the version's run (made now if there is none)."""
    found = client.search_model_versions(f"name = '{model}' and run_id = '{run_id}'")
    if found:
        return str(found[0].version)
    made = client.create_model_version(
        model,
        source=registry.weights(version).as_uri(),
        run_id=run_id,
        tags={VERSION_TAG: version.ref, "hangjia.digest": version.digest, "hangjia.kind": version.kind},
        description=f"Hangjia {version.ref}: {version.kind} weights {version.digest[:12]}, registered by "
        f"{version.created_by} at {version.created_at:%Y-%m-%d %H:%M} UTC.",
    )
    return str(made.version)


def _params(version) -> dict[str, str]:
    lineage = version.lineage
    params = {f"{k}": _text(v) for k, v in flatten(lineage.get("config", {})).items()}
    params |= {f"data.{name}": ref for name, ref in lineage.get("datasets", {}).items()}
    params |= {"kind": version.kind, "base_model": version.base_model, "stage": lineage.get("stage", "")}
    return {k[:250]: v[:PARAM_VALUE_LIMIT] for k, v in params.items()}


def _metrics(version) -> dict[str, float]:
    training = {f"train.{k}": v for k, v in flatten(version.lineage.get("training", {})).items() if _is_number(v)}
    return training | evaluation_metrics(version.evaluation)


def _tags(version) -> dict[str, str]:
    code = version.lineage.get("code", {})
    tags = {
        VERSION_TAG: version.ref,
        "hangjia.digest": version.digest,
        "hangjia.lineage_digest": version.lineage_digest,
        "hangjia.base_digest": version.base_digest,
        "hangjia.code.version": str(code.get("hangjia", "")),
        "hangjia.created_by": version.created_by,
        "mlflow.user": version.created_by,
        "hangjia.sources": str(len(version.lineage.get("sources", {}))),
    }
    if code.get("git"):
        tags["mlflow.source.git.commit"] = code["git"]
        tags["hangjia.code.dirty"] = str(bool(code.get("dirty")))
    return tags


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
