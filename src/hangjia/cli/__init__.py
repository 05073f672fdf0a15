"""The `hangjia` command. Each subcommand is a plain function; its docstring is its --help.

The commands live in the modules beside this one; `hangjia --help` lists the plain commands in the order their
modules are imported below, then the command groups in the order they are added:

    root.py       the app and its consoles
    options.py    the options commands share, and the workspace, config and database they open
    pipeline.py   init, ingest, synth, select, train, pretrain, dpo, reward, export, tune, eval, drift, build
    serving.py    serve, chat, models
    data.py       data (versioned datasets)
    database.py   db (the web app's schema), users
    registry.py   registry (versions, aliases), ab (A/B reports)
    feedback.py   review, feedback export, retrain
"""

from __future__ import annotations

import os
import sys

from hangjia import __version__

# isort: off
from hangjia.cli import pipeline, serving  # noqa: F401 (importing registers their commands, first in --help)
from hangjia.cli import data, database, registry, feedback

# isort: on
from hangjia.cli.root import app, console, out
from hangjia.core.errors import HangjiaError

for group, name in (
    (data.data_app, "data"),
    (database.db_app, "db"),
    (database.users_app, "users"),
    (registry.registry_app, "registry"),
    (registry.ab_app, "ab"),
    (feedback.review_app, "review"),
    (feedback.feedback_app, "feedback"),
):
    app.add_typer(group, name=name)

__all__ = ["app", "main"]


@app.command()
def version() -> None:
    """Print the Hangjia version."""
    out.print(__version__)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file "Loading weights" bars; ours show the work
    try:
        app()
    except HangjiaError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; committed stage outputs are intact.")
        sys.exit(130)
