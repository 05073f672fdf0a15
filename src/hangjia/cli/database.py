"""The web app's database: `hangjia db` (its schema version) and `hangjia users` (who may sign in, with which role)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from hangjia.cli.options import ConfigOpt, WorkspaceOpt, _database_url
from hangjia.cli.root import out

db_app = typer.Typer(
    help="The web app's database (users, conversations, feedback, reviews): its schema version.", no_args_is_help=True
)


def _migrate(workspace: Path, config: Path | None, step: Any, revision: str) -> None:
    """Run schema.upgrade or schema.downgrade on the workspace's database; print its revision before → after."""
    from hangjia.app.db.engine import display_url
    from hangjia.app.db.schema import current

    url = _database_url(workspace, config)
    before = current(url)
    step(url, revision)
    out.print(escape(f"{display_url(url)}: {before or 'empty'} → {current(url) or 'empty'}"), soft_wrap=True)


@db_app.command("upgrade")
def db_upgrade(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    revision: Annotated[str, typer.Argument(help="Revision to reach (default: the newest).")] = "head",
) -> None:
    """Create or update the database's tables (database.url or $HANGJIA_DATABASE_URL, else WORKSPACE/hangjia.db)."""
    from hangjia.app.db.schema import upgrade

    _migrate(workspace, config, upgrade, revision)


@db_app.command("downgrade")
def db_downgrade(
    workspace: WorkspaceOpt,
    revision: Annotated[str, typer.Argument(help="Revision to go back to; `base` drops every table and its rows.")],
    config: ConfigOpt = None,
) -> None:
    """Take the database's tables back to an earlier revision (what later revisions added is dropped)."""
    from hangjia.app.db.schema import downgrade

    _migrate(workspace, config, downgrade, revision)


@db_app.command("current")
def db_current(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """Print the database's URL (password hidden), its revision and the newest one this Hangjia knows."""
    from hangjia.app.db.engine import display_url
    from hangjia.app.db.schema import current, head

    url = _database_url(workspace, config)
    now = current(url) or "empty (run: hangjia db upgrade)"
    out.print(escape(f"{display_url(url)}: {now} (newest: {head()})"), soft_wrap=True)


users_app = typer.Typer(
    help="Who may sign in to the web app (`hangjia serve` at /) and with which role: user, reviewer, admin.",
    no_args_is_help=True,
)
UserArg = Annotated[str, typer.Argument(help="The user's name (what they type to sign in).")]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin (scripts).")
]


def _accounts(workspace: Path, config: Path | None):
    """The workspace database's users, its tables created or updated first."""
    from hangjia.app.auth import Accounts
    from hangjia.app.db.schema import upgrade

    url = _database_url(workspace, config)
    upgrade(url)
    return Accounts.open(url)


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _change(workspace: Path, config: Path | None, change: str, *args: Any) -> None:
    accounts = _accounts(workspace, config)
    try:
        getattr(accounts, change)(*args)
    finally:
        accounts.close()


@users_app.command("add")
def users_add(
    name: UserArg,
    workspace: WorkspaceOpt,
    role: Annotated[str, typer.Option("--role", help="user, reviewer (the review queue too) or admin.")] = "user",
    password_stdin: PasswordStdinOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Add a user who signs in with a password (asked twice; at least 8 characters)."""
    _change(workspace, config, "add", name, _new_password(password_stdin), role)
    out.print(escape(f"Added {name} ({role})."))


@users_app.command("passwd")
def users_passwd(
    name: UserArg, workspace: WorkspaceOpt, password_stdin: PasswordStdinOpt = False, config: ConfigOpt = None
) -> None:
    """Set a user's password (their other sessions end); an API user made by a request's `user` can then sign in."""
    _change(workspace, config, "set_password", name, _new_password(password_stdin))
    out.print(escape(f"Password of {name} set."))


@users_app.command("role")
def users_role(
    name: UserArg,
    role: Annotated[str, typer.Argument(help="user, reviewer or admin.")],
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
) -> None:
    """Give a user another role (at their next request)."""
    _change(workspace, config, "set_role", name, role)
    out.print(escape(f"{name} is now {role}."))


@users_app.command("deactivate")
def users_deactivate(name: UserArg, workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """Stop a user signing in; their sessions end at their next request. Their feedback stays."""
    _change(workspace, config, "set_active", name, False)
    out.print(escape(f"{name} can no longer sign in."))


@users_app.command("ls")
def users_ls(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """List the users: role, whether they can sign in, since when."""
    from hangjia.app.auth import can_sign_in

    accounts = _accounts(workspace, config)
    try:
        users = accounts.list()
    finally:
        accounts.close()
    table = Table("user", "role", "sign-in", "created (UTC)")
    for user in users:
        state = "yes" if can_sign_in(user) else ("deactivated" if not user.active else "no password (API user)")
        table.add_row(escape(user.username), user.role, state, f"{user.created_at:%Y-%m-%d %H:%M}")
    out.print(table)
