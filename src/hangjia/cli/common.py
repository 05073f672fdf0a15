"""What every `hangjia` command shares: the app, the consoles, the common options and the workspace setup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hangjia.core.config import ProjectConfig, load_config
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace

app = typer.Typer(
    help="Hangjia (行家): turn your documents into a domain-expert LLM you own, run and improve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
if not out.is_terminal:  # logs and pipes get rich's 80 columns, which truncates the eval table
    out.width = max(out.width, 140)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Project workspace folder.")]
DocsOpt = Annotated[Path | None, typer.Option("--docs", "-d", help="Folder of source documents.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="hangjia.yaml to use (default: WORKSPACE/hangjia.yaml if present)."),
]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="Run the data stages `local` (in-process) or on `ray` (Ray Data).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run even if inputs and config are unchanged.")]
QuestionsOpt = Annotated[
    Path | None, typer.Option("--questions", "-q", help="questions.jsonl to evaluate on (overrides eval.questions).")
]


def _setup(
    workspace: Path, config: Path | None, docs: Path | None = None, engine: str | None = None
) -> tuple[Workspace, ProjectConfig]:
    ws = Workspace(workspace)
    if config is None and ws.config_path.is_file():
        config = ws.config_path
    cfg = load_config(config)
    if docs is not None:
        cfg.docs = docs.expanduser().resolve()
    if engine is not None:
        try:
            cfg.ingest.engine = engine
        except ValueError:
            raise HangjiaError(f"Unknown engine '{engine}'; use local or ray.") from None
    return ws, cfg


def _summary(results: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("output")
    table.add_column("counts")
    for r in results:
        counts = ", ".join(f"{k}={_fmt(v)}" for k, v in r["counts"].items() if not isinstance(v, dict))
        table.add_row(r["stage"], "unchanged, skipped" if r["skipped"] else "done", r["dir"], counts)
    out.print(table)
    for r in results:
        if "report" in r:
            _ingest_report(r["report"])
        if "summary" in r:  # synth and select: examples per generator, drops per reason
            from hangjia.instruct.report import print_summary

            print_summary(out, r["summary"])
            out.print(f"report: {Path(r['dir']) / 'report.html'}")


def _ingest_report(report: dict[str, Any]) -> None:
    """What ingest did to the documents, in words: formats, PII removed, duplicates, skips with reasons."""
    formats = ", ".join(f"{n} {fmt}" for fmt, n in sorted(report["formats"].items()))
    out.print(f"loaded {report['documents']} documents ({formats}) → {report['chunks']} chunks")
    if report.get("pii"):
        out.print("redacted PII: " + ", ".join(f"{n} {kind}" for kind, n in sorted(report["pii"].items())))
    _kept_contacts(report.get("pii_kept", []), report.get("pii_keep_rules", {}))
    cleaning = report.get("cleaning") or {}
    if cleaning:
        out.print(
            f"cleaning: {cleaning.get('documents_changed', 0)} documents changed, "
            f"{cleaning.get('header_footer_lines', 0)} repeated header/footer lines and "
            f"{cleaning.get('boilerplate_lines', 0)} boilerplate lines dropped"
        )
    for cluster in report.get("duplicates", []):
        dropped = ", ".join(m for m in cluster["members"] if m != cluster["kept"])
        out.print(
            f"[cyan]{cluster['kind']} duplicate[/] kept {cluster['kept']}, dropped {dropped} "
            f"(similarity {cluster['similarity']:.2f}; {cluster['reason']})"
        )
    for skip in report["skipped"]:
        out.print(f"[yellow]skipped[/] {skip['path']}: {skip['reason']}")


def _kept_contacts(kept: list[dict[str, Any]], why: dict[str, str], shown: int = 8) -> None:
    """The published contacts ingest left in the text, by the rule that kept them, `shown` values a rule."""
    if not kept:
        return
    out.print(f"kept {len(kept)} published contacts ({sum(k['count'] for k in kept)} mentions) as not personal:")
    for rule in sorted({k["rule"] for k in kept}):
        values = [f"{k['value']} ×{k['count']}" if k["count"] > 1 else k["value"] for k in kept if k["rule"] == rule]
        more = f", … {len(values) - shown} more (ingest/report.json)" if len(values) > shown else ""
        line = f"  [green]{rule}[/]: {', '.join(values[:shown])}{more} [dim]({why.get(rule, '')})[/]"  # no "[" in them
        out.print(line, highlight=False, soft_wrap=True)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}"


def _database_url(workspace: Path, config: Path | None) -> str:
    from hangjia.app.db.engine import database_url

    ws, cfg = _setup(workspace, config)
    return database_url(cfg.database.url, ws.root)


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
