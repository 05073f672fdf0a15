"""The model registry: every trained model becomes a numbered version of a registered model (`domain@1`, `domain@2`,
...) with its lineage, and aliases in MLflow's sense (`production`, `candidate`) point at versions. Promote moves an
alias, rollback moves it back to where it pointed before its last move, and every move is kept as an event.

```
WS/registry/blobs/<sha256>/     a version's weights, content-addressed: the same weights are stored once, and an
                                alias is a row, never a copy
database (app/db):  registered_models ◄── model_versions ◄── model_aliases, alias_events
```

Why Hangjia's own tables and not MLflow's model registry as the store: the A/B report joins the registry's versions
with the exchanges and feedback the server records (`exchanges.model_version` = `domain@3`), and that join is one SQL
query only when both live in one database, one schema, one migration history; the tables run on SQLite (embedded
default, nothing to start) and PostgreSQL alike through the same code; and serving reads the aliases once a second
with no MLflow server to run, secure and keep alive beside Hangjia. A team that runs MLflow still sees every version,
its parameters, metrics, lineage and aliases in the MLflow UI: `hangjia registry export-mlflow` (app/mlflow_export.py).

Concurrency: every write (register, promote, rollback) is one transaction whose first statement updates the
registered model's row. On PostgreSQL that UPDATE holds the row's lock until commit, as `SELECT ... FOR UPDATE` would,
so a second promote waits and then reads the alias the first one left; on SQLite it takes the database's write lock
before anything is read (a transaction that reads first cannot wait for the lock once another writer committed, see
app/db/engine.py). So promotes never interleave, version numbers never repeat, and each event's `from_version` is
where the alias really was.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import AliasEvent, ModelAlias, ModelVersion, RegisteredModel, utcnow
from hangjia.app.db.schema import upgrade
from hangjia.app.lineage import Provenance, changes, flatten, lineage_diff, weights_kind
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import sha256_tree
from hangjia.llm.weights import DOMAIN

PRODUCTION, CANDIDATE = "production", "candidate"
BLOBS = Path("registry") / "blobs"
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def default_user() -> str:
    """Who registers or promotes when --by is not given: the login name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def has_registry(bind: Engine | Connection) -> bool:
    """Whether the database behind `bind` has the registry's tables yet (a workspace served or built before the
    registry existed has none until its next `hangjia build` or `registry` command creates them)."""
    return inspect(bind).has_table(ModelAlias.__tablename__)


def alias_targets(aliases: Iterable[ModelAlias]) -> dict[str, str]:
    """`model@alias` → `model@N` for each alias row."""
    return {f"{a.model}@{a.alias}": f"{a.model}@{a.version}" for a in aliases}


def concrete(name: str, targets: dict[str, str]) -> str:
    """What a served name answers with, given alias_targets: `domain` → the production alias's `domain@N` (itself
    while there is none), `domain@ALIAS` → its `domain@N`, anything else itself. The server resolves requests by it
    (app/versions.py) and the A/B report finds each side's answers by it (app/ab.py)."""
    if "@" not in name:
        return targets.get(f"{name}@{PRODUCTION}", name)
    return targets.get(name, name)


def check_alias(alias: str) -> str:
    """`alias` when it can name an alias: lower-case letters, digits, - and _, starting with a letter (so `domain@3`
    is always version 3, never an alias called 3)."""
    if not _NAME.fullmatch(alias):
        raise HangjiaError(f"'{alias}' cannot name an alias; use lower-case letters, digits, - and _ (e.g. candidate).")
    return alias


def parse_ref(ref: str) -> tuple[str, int | str]:
    """`domain@3` → (domain, 3); `domain@candidate` → (domain, candidate); `3` → (domain, 3)."""
    model, _, tail = ref.rpartition("@")
    model = model or DOMAIN
    if tail.isdigit():
        return model, int(tail)
    return model, check_alias(tail)


def tree_digest(folder: Path) -> str:
    """sha256 over a folder's files (relative path and content, sorted by path; hidden files left out)."""
    return sha256_tree(Path(folder))


@dataclass(frozen=True)
class Registration:
    """What `register` did: the version (new or the one already holding these weights and lineage), whether it is
    new, whether its evaluation was filled in, and the alias move it made."""

    version: ModelVersion
    created: bool
    evaluation_updated: bool = False
    moved: AliasEvent | None = None


class Registry:
    """The registry of one workspace: versions and aliases in its database (`url`), weights under WS/registry/blobs.
    `create`: bring the database's schema up to date first (commands that write); a server only reads."""

    def __init__(self, url: str, workspace: Path, *, create: bool = True):
        if create:
            upgrade(url)
        self.url = url
        self.root = Path(workspace).expanduser().resolve()
        self.engine = make_engine(url)
        self.sessions = make_sessions(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # Weights -----------------------------------------------------------------------------------------------------

    def store(self, folder: Path) -> tuple[str, Path]:
        """Copy a weight folder to registry/blobs/<digest>/ unless it is there already; (digest, stored folder)."""
        digest = tree_digest(folder)
        target = self.root / BLOBS / digest
        if target.is_dir():
            return digest, target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{digest}.partial-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial, ignore=shutil.ignore_patterns(".*"))
        if tree_digest(partial) != digest:
            shutil.rmtree(partial, ignore_errors=True)
            raise HangjiaError(f"{folder} changed while it was being copied into the registry; register it again.")
        try:
            partial.rename(target)
        except OSError:  # another registration stored the same weights first
            shutil.rmtree(partial, ignore_errors=True)
            if not target.is_dir():
                raise
        return digest, target

    def weights(self, version: ModelVersion) -> Path:
        """The folder holding a version's weights."""
        return self.root / version.weights

    # Writes ------------------------------------------------------------------------------------------------------

    def register(
        self,
        provenance: Provenance,
        *,
        model: str = DOMAIN,
        by: str | None = None,
        alias: str | None = None,
        base_digest: str | None = None,
    ) -> Registration:
        """Register a model's weights with their lineage as the next version of `model`, or, when a version already
        holds the same weights and lineage, return that one (filling in its evaluation when it had none and there
        is one now). `alias`: then point this alias at it."""
        by = by or default_user()
        if alias is not None:
            check_alias(alias)
        weights = provenance.weights
        kind = weights_kind(weights)
        digest, _ = self.store(weights.tuned)
        base_digest = base_digest or tree_digest(weights.base_dir)
        lineage = provenance.lineage
        lineage_digest = hashlib.sha256(json.dumps(lineage, sort_keys=True, default=str).encode()).hexdigest()
        with self.sessions.begin() as session:
            _lock(session, model, create=True)
            found = session.scalars(
                select(ModelVersion).where(
                    ModelVersion.model == model,
                    ModelVersion.digest == digest,
                    ModelVersion.lineage_digest == lineage_digest,
                )
            ).first()
            created = found is None
            updated = False
            if found is None:
                number = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model == model))
                found = ModelVersion(
                    model=model,
                    version=(number or 0) + 1,
                    kind=kind,
                    digest=digest,
                    weights=(BLOBS / digest).as_posix(),
                    base_model=str(weights.base_dir),
                    base_digest=base_digest,
                    lineage=lineage,
                    lineage_digest=lineage_digest,
                    evaluation=provenance.evaluation,
                    created_by=by,
                )
                session.add(found)
                session.flush()
            elif provenance.evaluation is not None and found.evaluation != provenance.evaluation:
                found.evaluation = provenance.evaluation
                updated = True
            moved = _move(session, model, alias, found.version, by, "promote", None) if alias else None
        return Registration(found, created, updated, moved)

    def promote(
        self,
        version: int,
        *,
        model: str = DOMAIN,
        alias: str = PRODUCTION,
        by: str | None = None,
        note: str | None = None,
    ) -> AliasEvent | None:
        """Point `alias` at `version`; the event, or None when it points there already."""
        check_alias(alias)
        with self.sessions.begin() as session:
            _lock(session, model)
            if _version(session, model, version) is None:
                raise _no_version(model, version)
            return _move(session, model, alias, version, by or default_user(), "promote", note)

    def rollback(
        self, *, model: str = DOMAIN, alias: str = PRODUCTION, by: str | None = None, note: str | None = None
    ) -> AliasEvent:
        """Move `alias` back to the version it pointed at before its last move (a rollback of a rollback goes forward
        again, as `kubectl rollout undo` does); the history keeps both moves."""
        check_alias(alias)
        with self.sessions.begin() as session:
            _lock(session, model)
            last = session.scalars(
                select(AliasEvent)
                .where(AliasEvent.model == model, AliasEvent.alias == alias)
                .order_by(AliasEvent.id.desc())
                .limit(1)
            ).first()
            if last is None:
                raise HangjiaError(f"{model}@{alias} has never been set, so there is nothing to roll back.")
            if last.from_version is None:
                raise HangjiaError(
                    f"{model}@{alias} was first set to version {last.to_version} by {last.by} and has not moved since; "
                    f"there is no earlier version to go back to (`hangjia registry promote N --alias {alias}`)."
                )
            return _move(session, model, alias, last.from_version, by or default_user(), "rollback", note)

    # Reads -------------------------------------------------------------------------------------------------------

    def versions(self, model: str = DOMAIN) -> list[ModelVersion]:
        with self.sessions() as session:
            query = select(ModelVersion).where(ModelVersion.model == model).order_by(ModelVersion.version)
            return list(session.scalars(query))

    def version(self, version: int, model: str = DOMAIN) -> ModelVersion:
        with self.sessions() as session:
            found = _version(session, model, version)
        if found is None:
            raise _no_version(model, version)
        return found

    def resolve(self, ref: str) -> ModelVersion:
        """`domain@3`, `domain@candidate`, `3` or `candidate` (of domain) → the version."""
        model, which = parse_ref(ref)
        if isinstance(which, int):
            return self.version(which, model)
        aliases = self.aliases(model)
        if which not in aliases:
            known = ", ".join(sorted(aliases)) or "none yet"
            raise HangjiaError(f"{model} has no alias '{which}' (aliases: {known}).", status_code=404)
        return self.version(aliases[which].version, model)

    def aliases(self, model: str = DOMAIN) -> dict[str, ModelAlias]:
        with self.sessions() as session:
            rows = session.scalars(select(ModelAlias).where(ModelAlias.model == model).order_by(ModelAlias.alias))
            return {row.alias: row for row in rows}

    def history(self, model: str = DOMAIN, alias: str | None = None) -> list[AliasEvent]:
        """Every alias move of `model` (of one alias, when given), oldest first."""
        with self.sessions() as session:
            query = select(AliasEvent).where(AliasEvent.model == model)
            if alias is not None:
                query = query.where(AliasEvent.alias == alias)
            return list(session.scalars(query.order_by(AliasEvent.id)))


def _lock(session: Session, model: str, *, create: bool = False) -> None:
    """Serialise this transaction with every other registry write to `model` (see the module docstring); `create`
    the registered model's row when it is missing."""
    now = utcnow()
    if create:
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(
            insert(RegisteredModel).values(name=model, created_at=now, updated_at=now).on_conflict_do_nothing()
        )
    touched = session.execute(update(RegisteredModel).where(RegisteredModel.name == model).values(updated_at=now))
    if touched.rowcount == 0:
        raise HangjiaError(
            f"No model '{model}' in the registry yet; `hangjia registry register` adds the workspace's model.",
            status_code=404,
        )


def _no_version(model: str, version: int) -> HangjiaError:
    return HangjiaError(f"{model} has no version {version}; `hangjia registry ls` lists them.", status_code=404)


def _version(session: Session, model: str, version: int) -> ModelVersion | None:
    query = select(ModelVersion).where(ModelVersion.model == model, ModelVersion.version == version)
    return session.scalars(query).first()


def _move(
    session: Session, model: str, alias: str, version: int, by: str, action: str, note: str | None
) -> AliasEvent | None:
    """Point `alias` at `version` and record the event (under the model's lock); None when it points there already."""
    row = session.get(ModelAlias, (model, alias))
    if row is not None and row.version == version:
        return None
    before = row.version if row is not None else None
    if row is None:
        session.add(ModelAlias(model=model, alias=alias, version=version, updated_by=by))
    else:
        row.version, row.updated_at, row.updated_by = version, utcnow(), by
    event = AliasEvent(
        model=model, alias=alias, action=action, from_version=before, to_version=version, by=by, note=note
    )
    session.add(event)
    session.flush()
    return event


def register_build(
    registry: Registry, provenance: Provenance, gate_passed: bool | None, by: str | None = None
) -> tuple[Registration, AliasEvent | None, str]:
    """What `hangjia build` does with the model it made: register it and point `candidate` at it; point `production`
    at it too when there is no production yet and the gate passed (`gate_passed` None: no gate rules configured).
    Never moves an existing production: that stays a person's `hangjia registry promote`. Returns the registration,
    the promotion (or None) and, in words, why."""
    done = registry.register(provenance, alias=CANDIDATE, by=by)
    number = done.version.version
    production = registry.aliases(done.version.model).get(PRODUCTION)
    if production is not None:
        why = f"production stays at version {production.version}; `hangjia registry promote {number}` moves it"
        return done, None, why
    if gate_passed is False:
        return done, None, "the gate failed, so there is still no production version"
    reason = "no production yet and no gate configured" if gate_passed is None else "no production yet, gate passed"
    event = registry.promote(number, model=done.version.model, alias=PRODUCTION, by=by, note=f"hangjia build: {reason}")
    return done, event, reason


def diff(old: ModelVersion, new: ModelVersion) -> dict[str, Any]:
    """What differs between two versions: weights, base, source files, dataset versions, config, code, training
    metrics and evaluation results."""
    return {
        "weights": changes({"digest": old.digest, "kind": old.kind}, {"digest": new.digest, "kind": new.kind}),
        "base": changes({"digest": old.base_digest}, {"digest": new.base_digest}),
        **lineage_diff(old.lineage, new.lineage),
        "evaluation": changes(evaluation_metrics(old.evaluation), evaluation_metrics(new.evaluation)),
    }


def evaluation_metrics(evaluation: dict[str, Any] | None) -> dict[str, float]:
    """An evaluation as flat metrics: per condition (model, RAG on/off) accuracy, F1, ROUGE-L and refusal accuracy,
    per multiple-choice set and model acc, retrieval's recalls and MRR, and the gate's verdict (1 passed, 0 failed)."""
    if not evaluation:
        return {}
    results = evaluation.get("results", {})
    metrics: dict[str, float] = {}
    for c in results.get("conditions", []):
        prefix = f"eval.{c['model']}.rag_{'on' if c['rag'] else 'off'}"
        for key in ("accuracy", "f1", "rouge_l", "refusal_accuracy"):
            if c.get(key) is not None:
                metrics[f"{prefix}.{key}"] = c[key]
    for row in results.get("choices", []):
        metrics[f"eval.{row['model']}.mcq.{_slug(row['set'])}.acc"] = row["acc"]
    overall = (results.get("retrieval") or {}).get("overall", {})
    metrics |= {f"eval.retrieval.{k}": v for k, v in flatten(overall).items() if k != "n"}
    gate = evaluation.get("gate")
    if gate is not None:
        metrics["eval.gate.passed"] = float(bool(gate["passed"]))
    return metrics


def _slug(text: str) -> str:
    """A name MLflow takes as part of a metric key (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]+", "_", text).strip("_ ")
