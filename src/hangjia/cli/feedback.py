"""From feedback to a better model: `hangjia review` (the queue), `hangjia feedback export` and `hangjia retrain`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from hangjia.cli.options import ConfigOpt, WorkspaceOpt, _database_url, _setup
from hangjia.cli.pipeline import _print_drift, _served_for_drift
from hangjia.cli.registry import ByOpt
from hangjia.cli.root import app, console, out
from hangjia.core.workspace import Workspace

review_app = typer.Typer(
    help="The review queue: corrections, preferences and good answers wait for a reviewer before they teach the model.",
    no_args_is_help=True,
)
feedback_app = typer.Typer(help="Feedback as training data.", no_args_is_help=True)
ReviewerOpt = Annotated[str, typer.Option("--by", help="The reviewer: a user with the role reviewer or admin.")]


def _database_session(workspace: Path, config: Path | None):
    """(sessions, engine, display URL) on the workspace's database, its tables brought up to date."""
    from hangjia.app.db.engine import display_url, make_engine, make_sessions
    from hangjia.app.db.schema import upgrade

    url = _database_url(workspace, config)
    upgrade(url)
    engine = make_engine(url)
    return make_sessions(engine), engine, display_url(url)


@review_app.command("ls")
def review_ls(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Also the decided ones, with their latest decision.")] = False,
) -> None:
    """The judgements waiting for a reviewer (oldest first): id, kind, the question, the answer and the proposal."""
    from rich.table import Table

    from hangjia.app.db.models import Exchange
    from hangjia.app.review import queue
    from hangjia.core.prompts import last_question

    sessions, engine, _ = _database_session(workspace, config)
    table = Table(title="review queue", title_justify="left")
    for col in ("id", "kind", "question", "answer", "proposed", "decision"):
        table.add_column(col, overflow="fold")
    try:
        with sessions() as session:
            items = queue(session, include_decided=all_)
            for fb, review in items:
                ex = session.get(Exchange, fb.exchange_id)
                proposed = fb.corrected_answer or ""
                if fb.kind == "preference":
                    proposed = f"picked exchange {fb.chosen_exchange_id} over {fb.rejected_exchange_id}"
                elif fb.kind in ("thumbs", "rating"):
                    proposed = "keep this answer" + (f" (rated {fb.rating})" if fb.rating else "")
                decision = "pending" if review is None else review.decision
                table.add_row(
                    str(fb.id),
                    fb.kind,
                    escape(last_question(ex.messages))[:200],
                    escape(ex.answer)[:200],
                    escape(proposed)[:200],
                    decision,
                )
    finally:
        engine.dispose()
    out.print(table)
    out.print(f"{len(items)} item(s)")


def _decide(workspace: Path, config: Path | None, feedback_id: int, by: str, decision: str, text: str | None) -> None:
    from hangjia.app.review import decide

    sessions, engine, _ = _database_session(workspace, config)
    try:
        with sessions.begin() as session:
            review = decide(session, feedback_id, by, decision, text)
            out.print(f"feedback {feedback_id}: {decision} by {escape(by)} (review {review.id})")
    finally:
        engine.dispose()


@review_app.command("accept")
def review_accept(feedback_id: int, workspace: WorkspaceOpt, by: ReviewerOpt, config: ConfigOpt = None) -> None:
    """Accept a judgement as it is: it becomes training data at the next `hangjia feedback export`."""
    _decide(workspace, config, feedback_id, by, "accepted", None)


@review_app.command("edit")
def review_edit(
    feedback_id: int,
    workspace: WorkspaceOpt,
    by: ReviewerOpt,
    text: Annotated[str, typer.Option("--text", help="The answer as it should be.")],
    config: ConfigOpt = None,
) -> None:
    """Accept a correction or a good answer with the reviewer's text instead."""
    _decide(workspace, config, feedback_id, by, "edited", text)


@review_app.command("reject")
def review_reject(feedback_id: int, workspace: WorkspaceOpt, by: ReviewerOpt, config: ConfigOpt = None) -> None:
    """Reject a judgement: it never becomes training data (a later decision can still accept it)."""
    _decide(workspace, config, feedback_id, by, "rejected", None)


@feedback_app.command("export")
def feedback_export(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """Write the accepted feedback as datasets: feedback_sft (alpaca: the question with its passages → the accepted
    answer) and feedback_dpo (question, chosen, rejected), each row naming its feedback and exchange."""
    from hangjia.app.review import export

    sessions, engine, url = _database_session(workspace, config)
    try:
        with sessions() as session:
            written = export(session, Workspace(workspace).root / "datasets", url)
    finally:
        engine.dispose()
    for name, info in written.items():
        out.print(f"{name}: " + ("nothing accepted yet" if info is None else f"{info['rows']} rows → {info['ref']}"))


@app.command()
def retrain(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    if_drift: Annotated[
        bool,
        typer.Option(
            "--if-drift",
            help="First check the served questions for drift (`hangjia drift --from-db`); retrain only when they "
            "drifted. For a scheduled job (cron, Kubernetes CronJob).",
        ),
    ] = False,
    days: Annotated[float, typer.Option(help="With --if-drift: the served answers of the last DAYS days.")] = 7.0,
    promote: Annotated[
        bool, typer.Option(help="Promote the candidate to production when the gate passes (--no-promote: only tell).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Retrain even when production already learned all the feedback.")] = False,
    by: ByOpt = None,
) -> None:
    """Train a candidate on the accepted feedback (`hangjia feedback export`) — production's adapter further on it
    with replayed training data, or a fresh one when the documents changed — then DPO on its preference pairs,
    evaluate it against production (retrain.gate), register it as `domain@candidate` and promote it when the gate
    passes. Writes a report to WORKSPACE/retrain/. Exit 0: promoted, or nothing to do; 1: the gate kept production."""
    from hangjia.app.db.engine import database_url
    from hangjia.app.retrain import KEPT
    from hangjia.app.retrain import retrain as run_retrain

    ws, cfg = _setup(workspace, config)
    if if_drift:
        from hangjia.stages.drift import drift as run_drift

        with tempfile.TemporaryDirectory() as tmp:
            questions, exchanges = _served_for_drift(ws, cfg, days, Path(tmp))
            report = run_drift(ws, cfg, console, questions, exchanges, None)
        _print_drift(report)
        if not report.drifted:
            out.print(f"no drift in the last {days:g} days: nothing retrained")
            return
        out.print("[red]drift detected[/]: retraining")
    result = run_retrain(ws, cfg, console, database_url(cfg.database.url, ws.root), by=by, promote=promote, force=force)
    if result.comparison:
        table = Table(title=f"domain@{result.candidate} (candidate) vs domain@{result.production} (production)")
        for col in ("measure", "candidate", "production", "change"):
            table.add_column(col, justify="left" if col == "measure" else "right")
        for r in result.comparison:
            table.add_row(r["measure"], f"{r['candidate']:.1f}", f"{r['production']:.1f}", f"{r['change']:+.1f}")
        out.print(table)
    if result.gate:
        for c in result.gate["checks"]:
            out.print(("[green]✓[/] " if c["passed"] else "[red]✗[/] ") + escape(c["message"]))
    report = f"; report: {result.report}" if result.report else ""
    out.print(f"[bold]{result.outcome}[/]: {escape(result.why)}{report}")
    if result.outcome == KEPT and result.gate and not result.gate["passed"]:
        raise typer.Exit(1)
