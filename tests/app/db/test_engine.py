"""How Hangjia connects: the URL a workspace uses, and the settings that make a commit durable."""

from __future__ import annotations

from sqlalchemy import text

from hangjia.app.db.engine import URL_ENV, database_url, make_engine


def test_the_url_comes_from_the_environment_then_the_config_then_the_workspace(monkeypatch, tmp_path):
    monkeypatch.delenv(URL_ENV, raising=False)
    assert database_url(None, tmp_path / "ws") == f"sqlite:///{tmp_path / 'ws' / 'hangjia.db'}"
    assert database_url("postgresql://db/h", tmp_path) == "postgresql://db/h"
    monkeypatch.setenv(URL_ENV, "postgresql://other/h")
    assert database_url("postgresql://db/h", tmp_path) == "postgresql://other/h"


def test_sqlite_is_wal_with_full_sync_foreign_keys_and_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'hangjia.db'}")  # the folder is made
    with engine.connect() as c:
        pragmas = {
            p: c.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    engine.dispose()
    assert pragmas == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 10_000}


def test_postgres_commits_wait_for_the_wal_flush(postgres):
    engine = make_engine(postgres.url().replace("+psycopg", ""))  # a bare postgresql:// means psycopg 3 here
    with engine.connect() as c:
        assert c.dialect.driver == "psycopg"
        assert c.execute(text("SHOW synchronous_commit")).scalar() == "on"
    engine.dispose()


def test_a_sqlite_migration_is_one_transaction(tmp_path):
    """SQLAlchemy sends BEGIN, not sqlite3: DDL inside a transaction rolls back with it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'h.db'}")
    with engine.connect() as c:
        with c.begin() as transaction:
            c.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            transaction.rollback()
        assert c.exec_driver_sql("SELECT name FROM sqlite_master WHERE name = 't'").first() is None
    engine.dispose()
