"""An acknowledged judgement survives the server's death: `hangjia serve` (a real subprocess) is killed with SIGKILL
in the middle of a burst of concurrent POST /v1/feedback, and every feedback id it answered 201 to is in the database
afterwards — on SQLite (the workspace's hangjia.db) and on PostgreSQL (HANGJIA_DATABASE_URL)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import yaml
from sqlalchemy import select

from hangjia.app.db.models import Feedback
from hangjia.app.exchanges import ExchangeStore
from tests.app.conftest import hangjia_serve


def test_every_acknowledged_feedback_survives_a_kill_9(tiny_model_dir, db_url, tmp_path):
    config = tmp_path / "hangjia.yaml"
    serve = {"backend": "transformers", "max_new_tokens": 2}
    config.write_text(yaml.safe_dump({"train": {"base_model": str(tiny_model_dir)}, "serve": serve}))
    ws = tmp_path / "ws"
    env = {**os.environ, "HANGJIA_CACHE": str(tmp_path / "cache"), "HANGJIA_DATABASE_URL": db_url}
    acknowledged: list[int] = []
    failures: list[str] = []
    with hangjia_serve("-w", str(ws), "--config", str(config), env=env) as served:
        ask = {"model": "base", "messages": [{"role": "user", "content": "E24?"}], "max_tokens": 2, "user": "ana"}
        exchange = httpx.post(f"{served.url}/v1/chat/completions", json=ask, timeout=60).json()["exchange_id"]
        stop = threading.Event()

        def judge(i: int) -> None:
            with httpx.Client(timeout=10) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    body = {"exchange_id": exchange, "kind": "rating", "rating": 1 + (i + n) % 5, "user": f"u{i}"}
                    try:
                        reply = client.post(f"{served.url}/v1/feedback", json=body)
                    except httpx.HTTPError:
                        return  # the server is gone: what it did not acknowledge may or may not be there
                    if reply.status_code == 201:
                        acknowledged.append(reply.json()["id"])
                    else:
                        failures.append(reply.text)

        threads = [threading.Thread(target=judge, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not failures
    assert len(acknowledged) >= 100, "the burst should have been acknowledged many times before the kill"
    store = ExchangeStore(db_url)
    try:
        with store.sessions() as session:
            stored = set(session.scalars(select(Feedback.id)))
    finally:
        store.close()
    assert set(acknowledged) <= stored
