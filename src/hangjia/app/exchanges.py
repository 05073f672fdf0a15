"""What the server keeps of each answer, and what people say about it: exchanges and feedback in the database.

Every chat answer is stored as an exchange (serve.record): the name asked for, the version that answered, the
conversation and the retrieved passages, the answer, the latency, and the user's id. Personal data in the messages
and the answer is replaced by placeholders first, with the same rules as ingest (corpus/pii.py), so the database
holds no more personal data than the index does. The reply carries the exchange's id; feedback refers to it.

Feedback (thumbs, a 1-5 rating, a comment, a correction, a preference between two drafts) is written and committed
before the reply that acknowledges it, so an acknowledged judgement survives a crash (see app/db/engine.py).

API clients have no sign-in: an OpenAI request's `user` field names who asked, and such a user is created on first
sight with a locked password ("!", which no password hash matches), so they can give feedback but not sign in until
an admin sets a password. Requests without `user` are stored as the user `anonymous`.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from hangjia.app.db.engine import make_engine, make_sessions
from hangjia.app.db.models import Exchange, Feedback, User, utcnow
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import write_jsonl
from hangjia.core.prompts import last_question
from hangjia.corpus.pii import redact

ANONYMOUS = "anonymous"
LOCKED = "!"
"""The password hash of a user made from an API request's `user` field: no password hashes to it."""


def scrub(text: str) -> str:
    """`text` with personal data replaced, the organisation's published contacts kept (as ingest does)."""
    return redact(text, keep_org=True)[0]


class ExchangeStore:
    """Every write is one short transaction that writes before it reads: on SQLite (WAL), a transaction that reads
    first and another writer commits meanwhile cannot write at all (SQLITE_BUSY_SNAPSHOT, no waiting), and the
    server writes from many threads at once."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.sessions = make_sessions(self.engine)
        self._users: dict[str, int] = {}
        """username → id: users are never deleted, so an id once known stays right."""

    def close(self) -> None:
        self.engine.dispose()

    def user_id(self, username: str | None) -> int:
        """The id of `username` (None: `anonymous`), made on first sight with a locked password."""
        name = (username or ANONYMOUS)[:64]
        if name not in self._users:
            insert = postgresql_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
            add = insert(User).values(
                username=name, password_hash=LOCKED, role="user", active=True, created_at=utcnow()
            )
            with self.sessions.begin() as session:
                session.execute(add.on_conflict_do_nothing(index_elements=["username"]))
            with self.sessions() as session:
                self._users[name] = session.scalar(select(User.id).where(User.username == name))
        return self._users[name]

    def record(
        self,
        *,
        model: str,
        version: str,
        messages: list[dict[str, str]],
        passages: list[dict[str, Any]] | None,
        answer: str,
        latency_ms: int,
        user: str | None,
        conversation_id: int | None = None,
    ) -> int:
        """Store one answered question (of a web chat's conversation, or of none); its id."""
        row = Exchange(
            conversation_id=conversation_id,
            user_id=self.user_id(user),
            model=model,
            model_version=version,
            messages=[{**m, "content": scrub(m["content"])} for m in messages],
            passages=list(passages or []),
            answer=scrub(answer),
            latency_ms=latency_ms,
        )
        with self.sessions.begin() as session:
            session.add(row)
        return row.id

    def feedback(self, fields: dict[str, Any], user: str | None) -> int:
        """Store one judgement (committed before this returns); its id. A missing exchange is a 404, a judgement
        that lacks what its kind needs a 400."""
        text = {k: scrub(v) for k in ("comment", "corrected_answer") if (v := fields.get(k))}
        row = Feedback(**{**fields, **text}, user_id=self.user_id(user))
        try:
            with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError as err:
            wanted = {
                fields["exchange_id"],
                *(fields[k] for k in ("chosen_exchange_id", "rejected_exchange_id") if fields.get(k)),
            }
            with self.sessions() as session:
                missing = sorted(wanted - set(session.scalars(select(Exchange.id).where(Exchange.id.in_(wanted)))))
            if missing:
                raise HangjiaError(
                    f"No exchange with id {', '.join(map(str, missing))}; feedback refers to the `exchange_id` an "
                    "answer carries.",
                    status_code=404,
                ) from None
            raise HangjiaError(f"The feedback is incomplete for its kind ({_constraint(err)}).") from None
        return row.id


def write_drift_inputs(store: ExchangeStore, since: datetime | None, questions: Path, exchanges: Path) -> int:
    """The stored exchanges (since `since`) as `hangjia drift` reads them: the questions (each exchange's last user
    turn) one per line, and one JSONL row per exchange (question, answer, thumbs: the latest thumbs given, or none,
    created_at); the number of exchanges."""
    with store.sessions() as session:
        query = select(Exchange).order_by(Exchange.id)
        if since is not None:
            query = query.where(Exchange.created_at >= since)
        rows = list(session.scalars(query))
        thumbs = dict(
            session.execute(
                select(Feedback.exchange_id, Feedback.thumbs).where(Feedback.kind == "thumbs").order_by(Feedback.id)
            ).all()
        )  # later rows overwrite earlier ones: the latest judgement counts
    asked = [(row, last_question(row.messages)) for row in rows]
    asked = [(row, q) for row, q in asked if q.strip()]
    write_jsonl(questions, [{"question": q} for _, q in asked])
    write_jsonl(
        exchanges,
        [
            {
                "question": q,
                "answer": row.answer,
                "thumbs": thumbs.get(row.id),
                "created_at": row.created_at.isoformat(),
            }
            for row, q in asked
        ],
    )
    return len(asked)


def _constraint(err: IntegrityError) -> str:
    """The name of the CHECK a row broke, in words (SQLite and PostgreSQL word it differently)."""
    text = str(err.orig)
    for name in (
        "thumbs_given",
        "rating_given",
        "comment_given",
        "correction_given",
        "preference_pair",
        "reason_on_thumbs_down",
        "rating_range",
    ):
        if name in text:
            return name.replace("_", " ")
    return text.splitlines()[0]
