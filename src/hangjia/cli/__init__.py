"""The `hangjia` command. Each subcommand is a plain function; its docstring is its --help.

The commands live in the modules beside this one, a group each; importing them registers them on `app`, and the
order of the imports is the order `hangjia --help` lists them in:

    common.py     the app, the consoles, the options every command shares, the workspace setup
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
# Each import registers its commands on `app`; --help lists them in this order.
from hangjia.cli import pipeline, serving, data, database, registry, feedback  # noqa: F401

# isort: on
from hangjia.cli.common import app, console, out
from hangjia.core.errors import HangjiaError

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
