"""`hangjia registry` (versions, aliases, promote, rollback, history), `hangjia ab` (A/B reports), and the registry
lookups `build` (registering its model) and `chat`/`models` (production's version) use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hangjia.cli.options import ConfigOpt, WorkspaceOpt, _database_url, _setup
from hangjia.cli.root import _fmt, _pct, out
from hangjia.core.config import ProjectConfig
from hangjia.core.workspace import Workspace

registry_app = typer.Typer(
    help="The model registry: numbered versions of `domain` with their lineage, aliases (production, candidate), "
    "promote, rollback and the history of every move.",
    no_args_is_help=True,
)
RefArg = Annotated[str, typer.Argument(help="A version: N, domain@N or an alias (candidate, domain@production).")]
AliasOpt = Annotated[str, typer.Option("--alias", help="The alias to move.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (default: the login name).")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why, kept in the history.")]


def _production(ws: Workspace, cfg: ProjectConfig) -> tuple[str, Path] | None:
    """The registry's production version of `domain` (its ref and weights folder), which `domain` means once there is
    one, as `hangjia serve` resolves it; None without a registry or a production alias. Reads only."""
    from hangjia.app.db.engine import database_url, make_engine
    from hangjia.app.db.schema import current
    from hangjia.app.registry import PRODUCTION, Registry, has_registry

    url = database_url(cfg.database.url, ws.root)
    if current(url) is None:
        return None
    engine = make_engine(url)
    try:
        if not has_registry(engine):
            return None
    finally:
        engine.dispose()
    with Registry(url, ws.root, create=False) as registry:
        alias = registry.aliases().get(PRODUCTION)
        if alias is None:
            return None
        version = registry.version(alias.version)
        return version.ref, registry.weights(version)


def _registry(ws: Workspace, cfg: ProjectConfig):
    """The workspace's registry, its tables created or updated first."""
    from hangjia.app.db.engine import database_url
    from hangjia.app.registry import Registry

    return Registry(database_url(cfg.database.url, ws.root), ws.root)


def _registered(done, moved=None, why: str = "") -> None:
    """Say what a registration did, and what it did to the aliases."""
    v = done.version
    if done.created:
        out.print(f"registered {v.ref}: {v.kind} weights {v.digest[:12]} (registry/blobs), by {v.created_by}")
    else:
        evaluated = "; its evaluation filled in" if done.evaluation_updated else ""
        out.print(f"{v.ref} already holds these weights and lineage: nothing new registered{evaluated}")
    for event in (done.moved, moved):
        if event is not None:
            out.print(
                f"{v.model}@{event.alias} → {v.ref}" + (f" (was {event.from_version})" if event.from_version else "")
            )
    if why:
        out.print(why)


def _register_build(ws: Workspace, cfg: ProjectConfig) -> None:
    """After a build: register the model as `candidate`, and as `production` when there is none yet and the gate
    (gate: rules, when any are set) passed."""
    from hangjia.app.lineage import provenance
    from hangjia.app.registry import register_build
    from hangjia.eval.gate import active_rules
    from hangjia.stages.eval import gate

    passed = None
    if active_rules(cfg.gate):
        passed = gate(ws, cfg).passed if ws.manifest("eval") else False
    made = provenance(ws, cfg.train.base_model)
    with _registry(ws, cfg) as registry:
        done, moved, why = register_build(registry, made, passed)
    _registered(done, moved, why)


@registry_app.command("register")
def registry_register(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at it, e.g. candidate.")] = None,
    by: ByOpt = None,
) -> None:
    """Register the workspace's domain model (train's output, or dpo's on it) as the next version of `domain`, with
    its lineage (stages, configs, dataset versions, source files' hashes, code version, training metrics, evaluation).
    The same weights with the same lineage are the same version: registering again adds nothing."""
    from hangjia.app.lineage import provenance

    ws, cfg = _setup(workspace, config)
    made = provenance(ws, cfg.train.base_model)
    with _registry(ws, cfg) as registry:
        _registered(registry.register(made, alias=alias, by=by))


@registry_app.command("ls")
def registry_ls(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """List the versions of `domain`, oldest first: weights, data, training loss, domain accuracy, gate, aliases."""
    from hangjia.app.registry import evaluation_metrics

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        versions, aliases = registry.versions(), registry.aliases()
    table = Table(title=f"registry of {ws.root}", title_justify="left")
    for col in (
        "version",
        "aliases",
        "kind",
        "weights",
        "documents",
        "train loss",
        "accuracy",
        "gate",
        "created",
        "by",
    ):
        table.add_column(col, justify="right" if col in ("train loss", "accuracy") else "left")
    for v in versions:
        metrics = evaluation_metrics(v.evaluation)
        accuracy = metrics.get("eval.domain.rag_on.accuracy", metrics.get("eval.domain.rag_off.accuracy"))
        gate = {1.0: "passed", 0.0: "[red]failed[/]"}.get(metrics.get("eval.gate.passed"), "—")
        # SFT's loss, also for a version DPO made last (its own counts hold DPO's loss, another quantity).
        sft = v.lineage.get("stages", {}).get("train", {}).get("counts") or v.lineage.get("training", {})
        loss = sft.get("final_train_loss")
        table.add_row(
            v.ref,
            ", ".join(sorted(a for a, row in aliases.items() if row.version == v.version)),
            v.kind,
            v.digest[:12],
            v.lineage.get("datasets", {}).get("documents", "—"),
            "—" if loss is None else f"{loss:.3f}",
            _pct(accuracy),
            gate,
            f"{v.created_at:%Y-%m-%d %H:%M}",
            escape(v.created_by),
        )
    out.print(table)
    if not versions:
        out.print(f"No versions yet: `hangjia build` (or `hangjia registry register -w {ws.root}`) adds one.")


@registry_app.command("show")
def registry_show(
    workspace: WorkspaceOpt,
    ref: RefArg,
    config: ConfigOpt = None,
    lineage: Annotated[bool, typer.Option("--lineage", help="Print the whole lineage and evaluation as JSON.")] = False,
) -> None:
    """Show one version: weights, base model, aliases, data versions, source files, code, training and eval."""
    from hangjia.app.registry import evaluation_metrics

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        v = registry.resolve(ref)
        aliases = sorted(a for a, row in registry.aliases(v.model).items() if row.version == v.version)
        weights = registry.weights(v)
    if lineage:
        out.print_json(json.dumps({"lineage": v.lineage, "evaluation": v.evaluation}, default=str))
        return
    code = v.lineage.get("code", {})
    lines = {
        "version": v.ref + (f" ({', '.join(aliases)})" if aliases else ""),
        "registered": f"{v.created_at:%Y-%m-%d %H:%M:%S} UTC by {v.created_by}",
        "weights": f"{v.kind}, sha256 {v.digest}, {weights}",
        "base model": f"{v.base_model} (sha256 {v.base_digest[:12]})",
        "made by": f"stage {v.lineage.get('stage')}, hangjia {code.get('hangjia')}"
        + (f", git {code['git'][:12]}{' (dirty)' if code.get('dirty') else ''}" if code.get("git") else ""),
        "data": ", ".join(v.lineage.get("datasets", {}).values()) or "—",
        "sources": f"{len(v.lineage.get('sources', {}))} files (--lineage lists them with their sha256)",
    }
    for key, value in lines.items():
        out.print(f"{key:>11}: {escape(str(value))}", soft_wrap=True)
    numbers = {f"train.{k}": x for k, x in v.lineage.get("training", {}).items() if isinstance(x, int | float)}
    for key, value in (numbers | evaluation_metrics(v.evaluation)).items():
        out.print(f"{'':>11}  {key} = {_fmt(value)}")


@registry_app.command("diff")
def registry_diff(workspace: WorkspaceOpt, old: RefArg, new: RefArg, config: ConfigOpt = None) -> None:
    """What differs between two versions: source files added, removed or changed (by sha256), dataset versions,
    config, code, training metrics, evaluation, weights and base model."""
    from hangjia.app.registry import diff

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        a, b = registry.resolve(old), registry.resolve(new)
    changes = diff(a, b)
    out.print(f"{a.ref} → {b.ref}")
    files = changes.pop("sources")
    for kind in ("added", "removed", "changed"):
        if files[kind]:
            out.print(f"  documents {kind}: {escape(', '.join(files[kind]))}", soft_wrap=True)
    if not any(files.values()):
        out.print("  documents: unchanged")
    for section, rows in changes.items():
        for key, (before, after) in rows.items():
            out.print(f"  {section} {escape(key)}: {escape(_fmt(before))} → {escape(_fmt(after))}", soft_wrap=True)


@registry_app.command("promote")
def registry_promote(
    workspace: WorkspaceOpt,
    ref: RefArg,
    config: ConfigOpt = None,
    alias: AliasOpt = "production",
    by: ByOpt = None,
    note: NoteOpt = None,
) -> None:
    """Point an alias (production by default) at a version. A running `hangjia serve` on the same database answers
    `domain` (or `domain@ALIAS`) with it within a second; requests already running finish on the old one."""
    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        target = registry.resolve(ref)
        event = registry.promote(target.version, model=target.model, alias=alias, by=by, note=note)
    if event is None:
        out.print(f"{target.model}@{alias} is {target.ref} already; nothing moved")
    else:
        was = f" (was {target.model}@{event.from_version})" if event.from_version else ""
        out.print(f"{target.model}@{alias} → {target.ref}{was}")


@registry_app.command("rollback")
def registry_rollback(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alias: AliasOpt = "production",
    by: ByOpt = None,
    note: NoteOpt = None,
) -> None:
    """Move an alias back to the version it pointed at before its last move (rolling back a rollback goes forward
    again); the history keeps both moves."""
    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        event = registry.rollback(alias=alias, by=by, note=note)
    out.print(f"{event.model}@{alias} → {event.model}@{event.to_version} (was {event.model}@{event.from_version})")


@registry_app.command("history")
def registry_history(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Only this alias's moves.")] = None,
) -> None:
    """Every alias move, oldest first: when, who, which alias, from which version to which, and why."""
    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        events = registry.history(alias=alias)
    table = Table(title="alias moves", title_justify="left")
    for col in ("when (UTC)", "alias", "action", "from", "to", "by", "note"):
        table.add_column(col)
    for e in events:
        was = "—" if e.from_version is None else str(e.from_version)
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", e.alias, e.action, was, str(e.to_version), e.by, escape(e.note or "")
        )
    out.print(table)


@registry_app.command("export-mlflow")
def registry_export_mlflow(
    workspace: WorkspaceOpt,
    tracking_uri: Annotated[
        str, typer.Option("--tracking-uri", help="MLflow's tracking URI: http://HOST:5000, sqlite:///PATH or a folder.")
    ],
    config: ConfigOpt = None,
    experiment: Annotated[str, typer.Option(help="The MLflow experiment the runs go to.")] = "hangjia",
) -> None:
    """Copy every version to MLflow as a run (params: config; metrics: training and eval; tags: digests, code
    version; artifact: lineage.json) and a registered model version, with the aliases; again later adds what is new.
    Needs `pip install 'hangjia[mlflow]'`."""
    from hangjia.app.db.engine import display_url
    from hangjia.app.mlflow_export import export_mlflow

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        done = export_mlflow(registry, tracking_uri, experiment)
    where = escape(display_url(tracking_uri) if "://" in tracking_uri else tracking_uri)
    out.print(f"MLflow at {where}, experiment {experiment}: {len(done.runs)} versions ({len(done.created)} new)")
    for ref, version in done.versions.items():
        out.print(f"  {ref} → run {done.runs[ref]}, model version {version}")
    for alias, version in done.aliases.items():
        out.print(f"  alias {alias} → model version {version}")


ab_app = typer.Typer(
    help="A/B tests between two served versions (serve.ab): what users said of each.", no_args_is_help=True
)


@ab_app.command("report")
def ab_report(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the tests.")] = 0.05,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
    days: Annotated[
        float | None, typer.Option(help="Only the answers of the last DAYS days: the test's period (default: all).")
    ] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act",
            help="On a significant result between registry versions: promote a better candidate to production, or "
            "stop a worse one (its alias back to production's version).",
        ),
    ] = False,
) -> None:
    """Per version that answered serve.ab.model: thumbs-up rate, mean rating, wins in two-draft comparisons,
    abstentions and latency with 95% intervals, and whether the candidate differs significantly from the model."""
    from datetime import UTC, datetime, timedelta

    from rich.table import Table

    from hangjia.app.ab import ONE_VERSION, report
    from hangjia.app.db.engine import make_engine, make_sessions
    from hangjia.core.config import ABConfig

    url = _database_url(workspace, config)
    _, cfg = _setup(workspace, config)
    ab = cfg.serve.ab or ABConfig()
    since = None if days is None else datetime.now(UTC) - timedelta(days=days)
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            result = report(session, ab, alpha, since)
    finally:
        engine.dispose()
    table = Table(title=f"A/B: {ab.model} vs {ab.candidate} (share {ab.share:.0%})")
    for column in ("version", "answers", "thumbs up", "rating", "wins", "abstains", "latency p50"):
        table.add_column(column, justify="left" if column == "version" else "right")

    def rate(d: dict) -> str:
        if d["value"] is None:
            return "-"
        return f"{d['value']:.0%} [{d['low']:.0%}, {d['high']:.0%}] n={d['n']}"

    for arm in result["arms"] + result["others"]:
        r = arm["rating"]
        rating = (
            "-"
            if r["value"] is None
            else f"{r['value']:.2f}" + ("" if r["low"] is None else f" [{r['low']:.2f}, {r['high']:.2f}]")
        )
        latency = "-" if arm["latency_ms_p50"] is None else f"{arm['latency_ms_p50']} ms"
        table.add_row(
            arm["version"],
            str(arm["exchanges"]),
            rate(arm["thumbs_up"]),
            rating,
            rate(arm["wins"]),
            rate(arm["abstention"]),
            latency,
        )
    out.print(table)
    ps = ", ".join(f"{k} p={v:.3g}" for k, v in result["p_values"].items() if v is not None) or "nothing to test yet"
    if result["verdict"] != ONE_VERSION:
        out.print(escape(f"candidate vs model: {ps}"))
    if result["verdict"] == ONE_VERSION:
        out.print(
            escape(
                f"{ab.model} and {ab.candidate} both answer with {result['versions']['model']} now: the test has "
                "ended (an alias moved) or serve.ab names one version twice; nothing to compare."
            )
        )
    verdict = {
        ONE_VERSION: "the same version as the model",
        "better": "significantly better than the model",
        "worse": "significantly worse than the model",
        "mixed": "significantly better on some measures and worse on others",
        "no difference": "not significantly different from the model (yet)",
    }[result["verdict"]]
    out.print(f"[bold]{escape(ab.candidate)} is {verdict}[/bold] (alpha {alpha})")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    if act:
        from hangjia.app.ab import act as act_on
        from hangjia.app.registry import Registry, default_user

        with Registry(url, Path(workspace)) as registry:
            done = act_on(result, registry, default_user())
        out.print(escape(done or "--act: nothing to do (no significant result between two registry versions)"))
