"""Which database a workspace uses and how Hangjia connects to it: a SQLite file in the workspace by default,
PostgreSQL (psycopg 3) when `database.url` or HANGJIA_DATABASE_URL names one. Both are set up so that a commit that
returned is on disk: the web app acknowledges a feedback write only after it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from hangjia.core.errors import HangjiaError

URL_ENV = "HANGJIA_DATABASE_URL"
SQLITE_FILE = "hangjia.db"
# How long a SQLite writer waits for another's write lock before "database is locked". A feedback write holds it for
# one INSERT and one fsync (~1-10 ms), so 10 s runs out only when something holds it abnormally long (a migration).
BUSY_TIMEOUT_MS = 10_000


def database_url(configured: str | None, workspace: Path) -> str:
    """The URL to use: HANGJIA_DATABASE_URL, else `database.url`, else the SQLite file hangjia.db in the workspace."""
    url = os.environ.get(URL_ENV) or configured
    if url:
        return url
    return f"sqlite:///{Path(workspace).expanduser().resolve() / SQLITE_FILE}"


def display_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a URL>"


def sqlite_file(url: str) -> Path | None:
    """The file a sqlite:/// URL names; None for PostgreSQL and for an in-memory SQLite database."""
    return _sqlite_path(_parse(url))


def make_engine(url: str) -> Engine:
    """An engine for `url` (sqlite:///PATH, or postgresql://... which means psycopg 3), set up for durable commits."""
    parsed = _parse(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(parsed)
        if parsed.get_backend_name() == "postgresql":
            return _postgres_engine(parsed)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise HangjiaError(f"Database {display_url(url)}: its driver is not installed ({exc}).") from None
    raise HangjiaError(
        f"Database {display_url(url)}: Hangjia runs on SQLite or PostgreSQL; set database.url (or {URL_ENV}) to "
        "sqlite:///PATH or postgresql+psycopg://USER@HOST/DB."
    )


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on `engine`: `with sessions.begin() as s: s.add(row)` commits when the block ends (or rolls back).
    Rows stay readable after the commit (expire_on_commit=False), so a route can return what it stored."""
    return sessionmaker(engine, expire_on_commit=False)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The value itself is not repeated: it may hold a password.
        raise HangjiaError(
            f"The database URL ({URL_ENV}, else database.url) is not a URL; set it to sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB."
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        # To SQLAlchemy a bare postgresql:// means psycopg2; Hangjia ships psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _json_dumps(value: Any) -> str:
    # Chinese stays readable in the database (sqlite3, psql) rather than \uXXXX escapes.
    return json.dumps(value, ensure_ascii=False)


def _sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    if url.database.startswith("file:"):  # a URI filename (sqlite:///file:PATH?mode=ro&uri=true)
        return None
    return Path(url.database).expanduser()


def _sqlite_engine(url: URL) -> Engine:
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, json_serializer=_json_dumps)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # sqlite3 sends BEGIN only before INSERT/UPDATE/DELETE, so a migration's CREATE TABLEs would each commit on their
    # own and a read would see no fixed snapshot; it sends none now and _sqlite_begin sends BEGIN for every
    # transaction (SQLAlchemy's recipe for "transactional DDL" with SQLite).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL: readers (dashboard, export) and the one writer at a time (feedback) do not block each other.
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode synchronous=NORMAL syncs only at checkpoints: a commit survives the process being killed (the WAL
    # is in the OS page cache) but power loss or an OS crash can undo the last ones. FULL syncs the WAL at every
    # commit, so a row the web app acknowledged is on disk. The price: 4.3 ms per single-row commit against 0.5 ms
    # with NORMAL (300 commits on the 2-core dev machine), ~230 acknowledged feedback writes a second.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")  # SQLite's default is off, per connection
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # Deferred: the write lock is taken at the first write and waited for up to busy_timeout (4 processes committing
    # at once: no "database is locked"). A transaction that reads and then writes cannot wait like that when another
    # writer committed in between (its snapshot is stale) and fails at once: write first, or retry the transaction.
    connection.exec_driver_sql("BEGIN")


def _postgres_engine(url: URL) -> Engine:
    # pre_ping: a pooled connection that a PostgreSQL restart closed is replaced, not handed to a request.
    engine = create_engine(url, json_serializer=_json_dumps, pool_pre_ping=True)
    event.listen(engine, "connect", _postgres_on_connect)
    return engine


def _postgres_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # PostgreSQL's default already returns from COMMIT only once the WAL is flushed; a server configured with
    # synchronous_commit=off would acknowledge writes a crash can still lose, so every session asks for it back.
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = on")
    dbapi_connection.commit()
