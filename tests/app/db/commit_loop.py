"""Run by the kill -9 tests: `python -m tests.app.db.commit_loop URL` stores exchanges one by one and prints each
one's id once its commit has returned, i.e. once the web app would have acknowledged it."""

from __future__ import annotations

import sys

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Exchange

QUESTION = [{"role": "user", "content": "E24代表什么故障？"}]


def main(url: str) -> None:
    sessions = make_sessions(make_engine(url))
    n = 0
    while True:
        with sessions.begin() as session:
            row = Exchange(
                model="domain", model_version="domain@1", messages=QUESTION, answer=f"排水泵堵塞 {n}", latency_ms=n
            )
            session.add(row)
        print(row.id, flush=True)
        n += 1


if __name__ == "__main__":
    main(sys.argv[1])
