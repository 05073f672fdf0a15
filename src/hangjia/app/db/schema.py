"""The version of a database's schema, moved by the Alembic migrations in migrations/versions/: `upgrade` (which
the server will run at startup), `downgrade` and `current`. No alembic.ini: the configuration is built here.

A new migration is a new file in migrations/versions/ (the next number, `down_revision` the previous one); Alembic
drafts one from the models against a database at the current head:
`alembic.command.revision(cfg, "what changes", autogenerate=True, rev_id="0002_...")` with
`cfg = alembic_config()` and `cfg.attributes["connection"]` an open connection (see `_run`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.exc import OperationalError

from hangjia.app.db.engine import display_url, make_engine, sqlite_file
from hangjia.core.errors import HangjiaError

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    """Alembic's configuration for Hangjia's migrations; env.py runs them on `attributes["connection"]`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    return config


def head() -> str:
    """The newest revision this Hangjia knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (default: the newest), creating its tables on first use."""
    _run(url, command.upgrade, revision)


def downgrade(url: str, revision: str) -> None:
    """Take the database at `url` back to `revision`; `base` drops every table the migrations made, rows included."""
    _run(url, command.downgrade, revision)


def current(url: str) -> str | None:
    """The revision the database at `url` is at; None before its first upgrade (a SQLite file is not created)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except OperationalError as exc:
        raise HangjiaError(f"Cannot reach the database {display_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()


def _run(url: str, step: Callable[[Config, str], None], revision: str) -> None:
    engine = make_engine(url)
    config = alembic_config()
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # A migration that changes a SQLite table copies it, drops the old one and renames the copy; with
                # foreign keys on, the drop fails or cascades. They can be switched only outside a transaction (so
                # on the driver's connection, before SQLAlchemy's BEGIN): off while migrating, checked at the end.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            with connection.begin():
                config.attributes["connection"] = connection
                step(config, revision)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise HangjiaError(f"Migrating {display_url(url)} to {revision} broke a foreign key; undone.")
    except (CommandError, RevisionError) as exc:
        raise HangjiaError(
            f"Database {display_url(url)}: {exc} (this Hangjia knows revisions up to {head()}; "
            "`hangjia db current` says where the database is)."
        ) from None
    except OperationalError as exc:
        raise HangjiaError(f"Cannot reach or change the database {display_url(url)}: {exc.orig}") from None
    finally:
        engine.dispose()
