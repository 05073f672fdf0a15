"""The root `hangjia` command: the Typer app every command module registers on, and its two consoles (`out` for
results, `console` on stderr for progress and errors) with the number formats the commands print."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

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


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}"
