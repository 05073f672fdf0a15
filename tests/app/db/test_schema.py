"""The migrations create what the models describe, go up and down on SQLite and PostgreSQL, and `hangjia db` drives
them."""

from __future__ import annotations

import re

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from hangjia.app.db.engine import URL_ENV, make_engine
from hangjia.app.db.models import Base
from hangjia.app.db.schema import current, downgrade, head, upgrade
from tests.test_cli import run

TABLES = {"users", "conversations", "exchanges", "feedback", "reviews"}
TABLES |= {"registered_models", "model_versions", "model_aliases", "alias_events"}


def constraints(engine: Engine) -> dict[str, set]:
    """Per table, every named constraint and index as the database reports it (CHECK texts without spaces)."""
    found: dict[str, set] = {}
    inspector = inspect(engine)
    for table in sorted(TABLES):
        names = {("pk", inspector.get_pk_constraint(table)["name"])}
        names |= {("fk", fk["name"], fk["referred_table"]) for fk in inspector.get_foreign_keys(table)}
        names |= {("uq", uq["name"]) for uq in inspector.get_unique_constraints(table)}
        names |= {("ix", ix["name"], tuple(ix["column_names"])) for ix in inspector.get_indexes(table)}
        names |= {
            ("ck", ck["name"], re.sub(r"\s+", "", ck["sqltext"])) for ck in inspector.get_check_constraints(table)
        }
        found[table] = names
    return found


def test_upgrade_to_head_matches_the_models_and_downgrades_to_base(db_url):
    assert current(db_url) is None
    upgrade(db_url)
    assert current(db_url) == head() == "0002_registry"
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
        migrated = constraints(engine)
        assert ("ck", "ck_feedback_rating_range") in {c[:2] for c in migrated["feedback"]}
        assert ("fk", "fk_alias_events_from_version_model_versions", "model_versions") in migrated["alias_events"]

        downgrade(db_url, "base")
        assert current(db_url) is None
        inspector = inspect(engine)
        assert inspector.get_table_names() == ["alembic_version"]

        # What the models create by themselves has the same names and CHECKs as what the migration created.
        Base.metadata.create_all(engine)
        assert constraints(engine) == migrated
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()
    upgrade(db_url)  # and up again from base
    assert current(db_url) == head()


def test_db_commands_upgrade_report_and_downgrade(monkeypatch, capsys, tmp_path, db_url):
    monkeypatch.setenv(URL_ENV, db_url)
    ws = str(tmp_path / "ws")
    code, out, _ = run(monkeypatch, capsys, "db", "current", "-w", ws)
    assert code == 0 and "empty" in out and head() in out
    code, out, _ = run(monkeypatch, capsys, "db", "upgrade", "-w", ws)
    assert code == 0 and f"empty → {head()}" in out
    code, out, _ = run(monkeypatch, capsys, "db", "upgrade", "-w", ws)
    assert code == 0 and f"{head()} → {head()}" in out
    code, out, _ = run(monkeypatch, capsys, "db", "downgrade", "-w", ws, "base")
    assert code == 0 and f"{head()} → empty" in out
    code, _, err = run(monkeypatch, capsys, "db", "downgrade", "-w", ws, "0042_nothing")
    assert code == 2 and "0042_nothing" in err and "Traceback" not in err


def test_the_default_database_is_a_sqlite_file_in_the_workspace(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(URL_ENV, raising=False)
    ws = tmp_path / "ws"
    code, out, _ = run(monkeypatch, capsys, "db", "current", "-w", str(ws))
    assert code == 0 and "empty" in out and not (ws / "hangjia.db").exists()  # asking creates nothing
    code, out, _ = run(monkeypatch, capsys, "db", "upgrade", "-w", str(ws))
    assert code == 0 and (ws / "hangjia.db").is_file()
    assert current(f"sqlite:///{ws / 'hangjia.db'}") == head()


def test_database_url_in_the_config_and_the_environment_overrides_it(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(URL_ENV, raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "hangjia.yaml").write_text(f"database:\n  url: sqlite:///{tmp_path / 'configured.db'}\n")
    assert run(monkeypatch, capsys, "db", "upgrade", "-w", str(ws))[0] == 0
    assert (tmp_path / "configured.db").is_file() and not (ws / "hangjia.db").exists()
    monkeypatch.setenv(URL_ENV, f"sqlite:///{tmp_path / 'from-env.db'}")
    assert run(monkeypatch, capsys, "db", "upgrade", "-w", str(ws))[0] == 0
    assert (tmp_path / "from-env.db").is_file()


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://h/db", "SQLite or PostgreSQL"), ("not a url", "is not a URL")],
)
def test_an_unusable_url_is_one_sentence(monkeypatch, capsys, tmp_path, url, message):
    monkeypatch.setenv(URL_ENV, url)
    code, _, err = run(monkeypatch, capsys, "db", "upgrade", "-w", str(tmp_path / "ws"))
    assert code == 2 and message in err and "Traceback" not in err


def test_a_password_is_never_printed(monkeypatch, capsys, tmp_path, postgres):
    monkeypatch.setenv(URL_ENV, f"postgresql://hangjia:s3cret@127.0.0.1:{postgres.port}/postgres")
    code, out, err = run(monkeypatch, capsys, "db", "current", "-w", str(tmp_path / "ws"))
    assert code == 0 and "s3cret" not in out + err and "***" in out
