"""The options the commands share and what they open: the workspace, its config (`hangjia.yaml`) and its database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hangjia.core.config import ProjectConfig, load_config
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace

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


def _database_url(workspace: Path, config: Path | None) -> str:
    from hangjia.app.db.engine import database_url

    ws, cfg = _setup(workspace, config)
    return database_url(cfg.database.url, ws.root)
