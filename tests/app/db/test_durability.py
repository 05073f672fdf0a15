"""A write acknowledged is a write kept: a process storing exchanges one commit at a time is killed with SIGKILL,
and every id it printed after a commit returned is there when the database is opened again. On PostgreSQL also
when the server itself is killed (every backend, as a crash) and recovers from its WAL.

Power loss is what synchronous=FULL (SQLite) and synchronous_commit=on (PostgreSQL) are for; a test cannot cut the
power, so it is covered by the settings test in test_engine.py, not here."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable

from sqlalchemy import select

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Exchange
from hangjia.app.db.schema import upgrade
from tests.app.db.commit_loop import QUESTION
from tests.app.db.conftest import PostgresCluster, start_cluster
from tests.paths import REPO

ACKNOWLEDGED_BEFORE_KILL = 200


def acknowledged_then_killed(url: str, kill: Callable[[subprocess.Popen], None]) -> list[int]:
    """Start the commit loop, let it acknowledge some rows, `kill`; every id it printed (pipe drained)."""
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.app.db.commit_loop", url],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ids = []
    try:
        for line in writer.stdout:
            ids.append(int(line))
            if len(ids) == ACKNOWLEDGED_BEFORE_KILL:
                break
        kill(writer)
        rest, err = writer.communicate(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
    # What it printed before dying counts; a line cut off mid-write was never acknowledged.
    ids += [int(line) for line in rest.split("\n")[:-1]]
    assert len(ids) >= ACKNOWLEDGED_BEFORE_KILL, err
    return ids


def stored(url: str) -> dict[int, str]:
    engine = make_engine(url)
    with make_sessions(engine)() as s:
        rows = {e.id: e for e in s.scalars(select(Exchange))}
    engine.dispose()
    assert all(e.messages == QUESTION and e.answer.startswith("排水泵堵塞") for e in rows.values())
    return {i: e.answer for i, e in rows.items()}


def test_a_committed_write_survives_kill_9_of_the_writer(db_url):
    upgrade(db_url)
    ids = acknowledged_then_killed(db_url, lambda writer: writer.send_signal(signal.SIGKILL))
    rows = stored(db_url)
    assert set(ids) <= set(rows)
    assert len(rows) - len(ids) <= 1  # at most the row whose commit returned as the kill landed, not yet printed


def test_postgres_keeps_acknowledged_writes_through_a_server_crash():
    """kill -9 of the server and its backends while the writer commits; the writer fails, the server recovers."""
    cluster: PostgresCluster = start_cluster()  # its own cluster: the session's keeps running for the others
    try:
        url = cluster.create_database("crash")
        upgrade(url)
        ids = acknowledged_then_killed(url, lambda _writer: cluster.crash())
        cluster.start()  # crash recovery: replays the WAL
        rows = stored(url)
        assert set(ids) <= set(rows)
        assert len(rows) - len(ids) <= 1
    finally:
        cluster.destroy()
