"""What a workspace's domain model was made from, as the registry records it with each version, and how two such
records differ.

The model's stage (train, or dpo on it) is followed back through every stage its manifest names as an input
(train ← select ← synth ← ingest, select ← index, train ← pretrain), each checked to be the very output the model was
made from (the fingerprint its manifest recorded), then through the dataset store's parents (pairs ← chunks ←
documents) down to the source files and their sha256:

    stages      per stage: fingerprint, inputs (file hashes among them), counts
    config      per stage: its resolved config
    datasets    pairs / chunks / documents version refs, and each version's rows and parents
    sources     source file → sha256, as ingest read it
    code        the Hangjia version and git commit that trained the model (from its stage manifest)
    training    the training stage's metrics (loss, steps, ...)

The evaluation is kept apart: known only when eval ran on these very weights, and it may come after registration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import STAGES, Workspace
from hangjia.corpus.datasets import DatasetStore
from hangjia.llm.weights import ModelWeights, adapter_type, domain_weights

# PEFT's peft_type → the registry's kind of weights (ModelVersion.kind).
_KINDS = {"LORA": "lora", "PREFIX_TUNING": "prefix", "P_TUNING": "ptuning"}
_DATASETS = ("pairs", "chunks", "documents")


@dataclass(frozen=True)
class Provenance:
    """A workspace's domain model, ready to register: its weights, their lineage and, when known, their evaluation."""

    weights: ModelWeights
    lineage: dict[str, Any]
    evaluation: dict[str, Any] | None


def weights_kind(weights: ModelWeights) -> str:
    """lora, prefix, ptuning (an adapter) or full (a whole model)."""
    if weights.tuned is None:
        raise HangjiaError("The base model itself cannot be registered; train a domain model first (`hangjia build`).")
    if not weights.is_adapter:
        return "full"
    peft = adapter_type(weights.tuned)
    if peft not in _KINDS:
        raise HangjiaError(f"{weights.tuned} holds a {peft} adapter; the registry takes LoRA, prefix or P-tuning.")
    return _KINDS[peft]


def provenance(ws: Workspace, base_model: str) -> Provenance:
    """The workspace's domain model (what `domain` serves: train's output, or dpo's on it) with its lineage."""
    weights = domain_weights(ws, base_model)
    if weights.stage is None:
        raise HangjiaError(f"No trained model in {ws.root} yet; run `hangjia build` (or `hangjia train`) first.")
    chain = stage_chain(ws, weights.stage)
    train = chain["train"]
    store = DatasetStore(ws.root / "datasets")
    pairs = chain["synth"]["counts"].get("dataset") if "synth" in chain else None
    datasets = store.lineage(pairs) if pairs else []
    lineage = {
        "stage": weights.stage,
        "base_model": train["config"]["base_model"],
        "stages": {
            name: {"fingerprint": m["fingerprint"], "inputs": m["inputs"], "counts": m["counts"]}
            for name, m in chain.items()
        },
        "config": {name: m["config"] for name, m in chain.items()},
        "datasets": {v.name: v.ref for v in datasets if v.name in _DATASETS} | _feedback(chain),
        "dataset_versions": [
            {"ref": v.ref, "rows": v.rows, "stage": v.manifest["stage"], "parents": v.manifest["parents"]}
            for v in datasets
        ],
        "sources": _sources(datasets),
        "code": chain[weights.stage].get("code") or {"hangjia": chain[weights.stage]["packages"].get("hangjia")},
        "packages": chain[weights.stage]["packages"],
        "training": chain[weights.stage]["counts"],
    }
    return Provenance(weights, lineage, _evaluation(ws, chain, weights.stage))


def stage_chain(ws: Workspace, last: str) -> dict[str, dict[str, Any]]:
    """The manifests of `last` and of every stage it was made from, checked to be the outputs it was made from."""
    chain: dict[str, dict[str, Any]] = {}
    queue = [last]
    while queue:
        name = queue.pop(0)
        if name in chain:
            continue
        chain[name] = ws.require(name, f"`hangjia {name}`")
        for upstream, fingerprint in chain[name]["inputs"].items():
            if upstream not in STAGES or not fingerprint:  # a file's hash, or an optional stage that did not run
                continue
            found = ws.manifest(upstream)
            if found is None or found["fingerprint"] != fingerprint:
                raise HangjiaError(
                    f"The {name} output in {ws.root} was made from an earlier `{upstream}` output than the one there "
                    f"now, so its lineage cannot be told; run `hangjia build` (or the stages from {upstream} on) so "
                    "the model matches its data, then register it."
                )
            queue.append(upstream)
    return chain


def _feedback(chain: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The feedback dataset versions the model learned (train's feedback_sft, dpo's feedback_dpo), by name."""
    return {
        name: ref
        for manifest in chain.values()
        for name, ref in manifest["inputs"].items()
        if name in ("feedback_sft", "feedback_dpo")
    }


def _sources(datasets: list) -> dict[str, str]:
    """Source file → sha256 from the root dataset versions (documents) that list them."""
    found: dict[str, str] = {}
    for version in datasets:
        if {"source", "sha256"} <= set(version.manifest["columns"]):
            for row in version.read(columns=["source", "sha256"]).to_pylist():
                found[row["source"]] = row["sha256"]
    return dict(sorted(found.items()))


def _evaluation(ws: Workspace, chain: dict[str, dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """eval/results.json and eval/gate.json when eval ran on these weights: on this train output and, for a dpo
    model, after dpo made it (eval's inputs name train only)."""
    manifest = ws.manifest("eval")
    if manifest is None or manifest["inputs"].get("train") != chain["train"]["fingerprint"]:
        return None
    if stage != "train" and _started(manifest) < _started(chain[stage]):
        return None
    folder = ws.stage_dir("eval")
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    results.pop("seconds", None)  # how long it took, not what it measured
    gate = folder / "gate.json"
    verdict = json.loads(gate.read_text(encoding="utf-8")) if gate.is_file() else None
    return {"fingerprint": manifest["fingerprint"], "results": results, "gate": verdict}


def _started(manifest: dict[str, Any]) -> datetime:
    return datetime.strptime(manifest["started_at"], "%Y-%m-%dT%H:%M:%S%z")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: {"train": {"lora_r": 8}} → {"train.lora_r": 8}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two flat dicts: key → (old, new), None for a side that lacks it."""
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def source_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    """Source files added, removed and changed (by sha256) from one lineage to the next."""
    a, b = old.get("sources", {}), new.get("sources", {})
    return {
        "added": sorted(b.keys() - a.keys()),
        "removed": sorted(a.keys() - b.keys()),
        "changed": sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
    }


def lineage_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What differs between two versions' lineages: source files, dataset versions, config, code, training metrics."""
    return {
        "sources": source_changes(old, new),
        "datasets": changes(old.get("datasets", {}), new.get("datasets", {})),
        "config": changes(flatten(old.get("config", {})), flatten(new.get("config", {}))),
        "code": changes(old.get("code", {}), new.get("code", {})),
        "training": changes(_numbers(old.get("training", {})), _numbers(new.get("training", {}))),
    }


def _numbers(counts: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in flatten(counts).items() if isinstance(v, int | float) and not isinstance(v, bool)}
