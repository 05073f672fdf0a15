"""`hangjia data`: the versioned datasets (list, show, diff, lineage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hangjia.cli.options import WorkspaceOpt
from hangjia.cli.root import out
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace

data_app = typer.Typer(help="Versioned datasets: list, show, diff, lineage.", no_args_is_help=True)


def _store(workspace: Path):
    from hangjia.corpus.datasets import DatasetStore

    return DatasetStore(Workspace(workspace).root / "datasets")


@data_app.command("ls")
def data_ls(workspace: WorkspaceOpt) -> None:
    """List every dataset and its versions, newest last."""
    store = _store(workspace)
    table = Table(title=f"datasets in {store.root}", title_justify="left")
    for col in ("dataset", "version", "rows", "stage", "parents", "created"):
        table.add_column(col)
    for name in store.names():
        for v in store.versions(name):
            parents = ", ".join(v.manifest["parents"])
            table.add_row(name, v.version, str(v.rows), v.manifest["stage"], parents, v.manifest["created_at"])
    out.print(table)


@data_app.command("show")
def data_show(
    workspace: WorkspaceOpt,
    ref: Annotated[str, typer.Argument(help="NAME, NAME@latest or NAME@VERSION (a prefix is enough).")],
    rows: Annotated[int, typer.Option(help="Sample rows to print.")] = 3,
) -> None:
    """Show a dataset version: manifest, column stats and sample rows."""
    version = _store(workspace).resolve(ref)
    manifest = {k: v for k, v in version.manifest.items() if k not in ("config",)}
    out.print_json(json.dumps(manifest, default=str))
    table = version.read()
    for row in table.slice(0, rows).to_pylist():
        shown = {k: (v[:200] + "…" if isinstance(v, str) and len(v) > 200 else v) for k, v in row.items()}
        out.print_json(json.dumps(shown, ensure_ascii=False, default=str))


@data_app.command("diff")
def data_diff(
    workspace: WorkspaceOpt,
    old: Annotated[str, typer.Argument(help="NAME@VERSION of the older dataset.")],
    new: Annotated[str, typer.Argument(help="NAME@VERSION of the newer dataset.")],
    key: Annotated[str | None, typer.Option(help="Column that identifies a row (default: id, else source).")] = None,
) -> None:
    """Rows added, removed and changed between two dataset versions."""
    from hangjia.corpus.datasets import diff

    store = _store(workspace)
    a, b = store.resolve(old).read(), store.resolve(new).read()
    key = key or ("id" if "id" in a.column_names else "source")
    if key not in a.column_names or key not in b.column_names:
        raise HangjiaError(f"Column '{key}' is not in both datasets; pass --key with one of {a.column_names}.")
    changes = diff(a, b, key)
    out.print(f"{old} → {new}: {a.num_rows} → {b.num_rows} rows")
    for kind in ("added", "removed", "changed"):
        keys = changes[kind]
        out.print(f"  {kind}: {len(keys)}" + (f"  e.g. {', '.join(map(str, keys[:5]))}" if keys else ""))


@data_app.command("lineage")
def data_lineage(
    workspace: WorkspaceOpt,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to trace back to its source files.")],
) -> None:
    """Trace a dataset version back through its parents to the source files."""
    store = _store(workspace)
    for version in store.lineage(ref):
        out.print(f"{version.ref}  ({version.rows} rows, stage {version.manifest['stage'] or '-'})")
        for parent in version.manifest["parents"]:
            out.print(f"  ← {parent}")
    root = store.lineage(ref)[-1]
    if "source" in root.manifest["columns"]:
        table = root.read(columns=[c for c in ("source", "sha256") if c in root.manifest["columns"]])
        for row in sorted({tuple(r.values()) for r in table.to_pylist()}):
            out.print(f"  file {' sha256 '.join(row)}")
