"""What the server tests (and the chat command's) share: a real uvicorn server around an Engine, on a free port; a
three-chunk index; answers that cite; and the databases the feedback store and registry tests run on (`db_url`: SQLite
and a throwaway PostgreSQL, see tests/app/db/conftest.py)."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.schema import upgrade
from hangjia.app.server import create_app
from hangjia.core.config import ServeConfig
from hangjia.llm.generation import Completion, Engine, GenerationParams
from tests.app.db.conftest import PostgresCluster, free_port, start_cluster

QUESTION = [{"role": "user", "content": "How do I reset the DW4500 dishwasher?"}]
_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster, started on first use."""
    cluster = start_cluster()
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or a new database in the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hangjia.db'}"
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    name = f"test_{next(_DATABASES)}"
    url = cluster.create_database(name)
    yield url
    cluster.drop_database(name)


@pytest.fixture
def sessions(db_url) -> Iterator[sessionmaker[Session]]:
    """Sessions on `db_url` migrated to the newest revision."""
    engine = make_engine(db_url)
    upgrade(db_url)
    yield make_sessions(engine)
    engine.dispose()


@contextmanager
def live_server(engine: Engine, store=None, auth=None, **settings) -> Iterator[str]:
    """Run the app (serve settings: max_new_tokens 16 and the response cache off unless given) on a free loopback
    port in a background thread, as `hangjia serve` runs it; yield its base URL. The cache is off so that a repeated
    greedy request really generates again (tests/app/test_cache.py turns it on). With an ExchangeStore, answers are
    recorded and /v1/feedback stores judgements; with an app.auth.Auth, the web app signs people in."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ServeConfig(port=port, **{"max_new_tokens": 16, "cache_size": 0, **settings})
    app = create_app(engine, config, store, auth=auth)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(url: str, name: str, **labels) -> float:
    return scrape(url).get((name, tuple(sorted({"model_name": "base", **labels}.items()))), 0.0)


def wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def make_index(out: Path):
    """A saved and reloaded BM25 index over three one-chunk documents (dishwasher, warranty, heat pump)."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.corpus.index import BM25Index

    texts = {
        "dishwasher_error_codes.md": "Error E24 means the drain is blocked; clean the filter and reset the DW4500.",
        "warranty_policy.md": "The warranty covers parts and labour for two years from the date of purchase.",
        "heat_pump_troubleshooting.txt": "If the heat pump ices up, run a manual defrost from the service menu.",
    }
    chunks = [
        Chunk(id=f"c{i}", source=source, section="Main", start=0, end=len(text), text=text)
        for i, (source, text) in enumerate(texts.items())
    ]
    index = BM25Index.build(chunks)
    index.save(out)
    return BM25Index.load(out)


def answering(monkeypatch, answer: str | Callable[[str, GenerationParams], str]) -> None:
    """Make every generation answer `answer`, or what `answer(model name, params)` says (in two streamed pieces): the
    tiny model never writes [n] itself."""
    answer_for = answer if callable(answer) else lambda name, params: answer

    def generate_texts(self, texts, name, params, control=None, *, trim=False):
        return [Completion(answer_for(name, params), 10, 5, "stop") for _ in texts]

    def stream_text(self, text, name, params, control=None, *, trim=False):
        summary, answer = Completion("", 10, 5, "stop"), answer_for(name, params)

        def deltas():
            for piece in (answer[:9], answer[9:]):
                summary.text += piece
                yield piece

        return deltas(), summary

    monkeypatch.setattr(Engine, "generate_texts", generate_texts)
    monkeypatch.setattr(Engine, "stream_text", stream_text)


class ServeProcess:
    """A `hangjia serve` subprocess: its base URL, and (once it has stopped) everything it printed."""

    def __init__(self, url: str, proc: subprocess.Popen):
        self.url, self.proc, self.output = url, proc, ""


@contextmanager
def hangjia_serve(*args: str, env: dict[str, str] | None = None, ready_s: float = 120) -> Iterator[ServeProcess]:
    """`python -m hangjia serve ARGS --port P` on a free port, yielded once /ready answers 200 (the test fails if it
    exits or is not ready in `ready_s`); terminated afterwards, its output kept in `.output`."""
    port = free_port()
    command = [sys.executable, "-m", "hangjia", "serve", *args, "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    served = ServeProcess(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + ready_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read()[-3000:]}")
        try:
            if httpx.get(f"{served.url}/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not become ready")
    try:
        yield served
    finally:
        proc.terminate()
        served.output = proc.communicate(timeout=30)[0]
