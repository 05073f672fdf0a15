"""The database tests run twice: on a SQLite file and on a real PostgreSQL server.

`db_url` (in tests/app/conftest.py, so the registry's tests have it too) is a fresh empty database per test,
parametrised `sqlite` / `postgresql`. The PostgreSQL one lives in a throwaway cluster the session starts with
PostgreSQL's own initdb and pg_ctl (Debian's postgresql package: /usr/lib/postgresql/<version>/bin), on a free
loopback port, its data and socket in a temporary folder, stopped and deleted at the end. initdb refuses to run as
root, so as root the server runs as the `postgres` user the package creates. Without the binaries the PostgreSQL half
is skipped with the reason; with HANGJIA_REQUIRE_POSTGRES=1 (CI: .ci/run installs the package and sets it) it fails
instead, so CI cannot pass on SQLite alone.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REQUIRE_ENV = "HANGJIA_REQUIRE_POSTGRES"
SUPERUSER = "hangjia"


def postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "pg_ctl").is_file()]
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0, default=None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """A throwaway PostgreSQL cluster: trust authentication for `hangjia` on 127.0.0.1 only, fsync on (the
    durability tests kill it), data, socket and log in one temporary folder."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hangjia-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run the server as") from None
            self.run_as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        try:
            # --no-sync: initdb does not wait for its files to reach the disk (a throwaway cluster); the server
            # itself runs with fsync on.
            self._tool(
                "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"
            )
            self.start()
        except BaseException:
            self.destroy()
            raise

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
        self._tool("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        self._tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def crash(self) -> None:
        """kill -9 the server and every backend at once, as a crash would; `start` then recovers from the WAL."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        victims = [postmaster, *_children(postmaster)]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path(f"/proc/{postmaster}").exists():
            # Dead but not reaped (its parent, init here, may never reap it): postgres would take the zombie for a
            # running server named in its lock files and refuse to start, so the stale ones go.
            for lock in [self.data / "postmaster.pid", *self.root.glob(".s.PGSQL.*.lock")]:
                lock.unlink()

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        self._sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self._sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        """Stop the server if it runs, delete everything."""
        try:
            if (self.data / "postmaster.pid").is_file():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True) as c:
            c.execute(statement)

    def _tool(self, name: str, *args: object) -> None:
        command = [*self.run_as, str(self.bindir / name), *map(str, args)]
        # cwd: the postgres user may not be allowed into the caller's folder.
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n{log}")


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"  # a zombie is dead, only not yet reaped by its parent


def start_cluster() -> PostgresCluster:
    """A running cluster, or the test skipped (failed under HANGJIA_REQUIRE_POSTGRES=1) saying what is missing."""
    why = None
    bindir = postgres_bindir()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        why = "psycopg is not installed (pip install 'psycopg[binary]')"
    if bindir is None:
        why = "PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql, as .ci/run does)"
    if why is None:
        try:
            return PostgresCluster(bindir)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            why = f"a PostgreSQL cluster did not start: {exc}"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {why}", pytrace=False)
    pytest.skip(f"PostgreSQL half skipped: {why}")
