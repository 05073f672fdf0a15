"""The tables hold what issue 23 stores, and refuse what it must not: on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError

from hangjia.app.db.models import Conversation, Exchange, Feedback, Review, User

MESSAGES = [
    {"role": "system", "content": "只根据资料回答。"},
    {"role": "user", "content": "E24代表什么故障？"},
]
PASSAGES = [
    {
        "index": 1,
        "chunk_id": "c-7",
        "source": "手册/洗碗机.md",
        "section": "故障代码",
        "page": None,
        "start": 0,
        "end": 18,
        "text": "E24：排水泵堵塞，请清洁过滤网。",
        "score": 7.25,
        "cited": True,
    },
]


def seed(sessions) -> dict[str, int]:
    """A user, a reviewer, a conversation with two drafts of one answer; their ids."""
    with sessions.begin() as s:
        user, reviewer = (
            User(username="li.wei", password_hash="h"),
            User(username="r", password_hash="h", role="reviewer"),
        )
        chat = Conversation(user=user, title="洗碗机")
        drafts = [
            Exchange(
                conversation=chat,
                user_id=None,
                model="domain",
                model_version=v,
                messages=MESSAGES,
                passages=PASSAGES,
                answer=f"排水泵堵塞 [1]（{v}）",
                latency_ms=420,
            )
            for v in ("domain@1", "domain@2")
        ]
        s.add_all([user, reviewer, chat, *drafts])
        s.flush()
        return {"user": user.id, "reviewer": reviewer.id, "a": drafts[0].id, "b": drafts[1].id}


def add(sessions, row) -> None:
    with sessions.begin() as s:
        s.add(row)


def test_an_exchange_keeps_its_json_and_chinese_as_given(sessions):
    ids = seed(sessions)
    with sessions() as s:
        exchange = s.get(Exchange, ids["a"])
        assert exchange.messages == MESSAGES and exchange.passages == PASSAGES
        assert exchange.passages[0]["score"] == 7.25 and exchange.passages[0]["page"] is None
        assert exchange.answer == "排水泵堵塞 [1]（domain@1）" and exchange.conversation.title == "洗碗机"
        # Stored readable, not as \\uXXXX escapes: what someone sees in sqlite3 or psql.
        raw = s.execute(text("SELECT CAST(messages AS TEXT) FROM exchanges WHERE id = :id"), {"id": ids["a"]})
        assert "E24代表什么故障" in raw.scalar_one()
        assert [e.model_version for e in exchange.conversation.exchanges] == ["domain@1", "domain@2"]


def test_timestamps_are_aware_utc(sessions):
    ids = seed(sessions)
    shanghai = timezone(timedelta(hours=8))
    add(
        sessions,
        Feedback(
            exchange_id=ids["a"],
            user_id=ids["user"],
            kind="rating",
            rating=4,
            created_at=datetime(2026, 12, 6, 8, 30, tzinfo=shanghai),
        ),
    )
    with sessions() as s:
        assert s.get(Exchange, ids["a"]).created_at.tzinfo == UTC
        assert abs(s.get(Exchange, ids["a"]).created_at - datetime.now(UTC)) < timedelta(minutes=5)
        assert s.scalars(select(Feedback.created_at)).one() == datetime(2026, 12, 6, 0, 30, tzinfo=UTC)
    with pytest.raises(StatementError, match="no time zone"):
        add(sessions, User(username="naive", password_hash="h", created_at=datetime(2026, 12, 6)))


def test_every_kind_of_feedback_and_its_review_is_stored(sessions):
    ids = seed(sessions)
    a, b, user = ids["a"], ids["b"], ids["user"]
    rows = [
        Feedback(exchange_id=a, user_id=user, kind="thumbs", thumbs=False, reason="not_in_documents", comment="没有"),
        Feedback(exchange_id=a, user_id=user, kind="thumbs", thumbs=True),
        Feedback(exchange_id=a, user_id=user, kind="rating", rating=1),
        Feedback(exchange_id=a, user_id=user, kind="comment", comment="太短"),
        Feedback(exchange_id=a, user_id=user, kind="correction", corrected_answer="E24：排水泵堵塞。"),
        Feedback(exchange_id=a, user_id=user, kind="preference", chosen_exchange_id=b, rejected_exchange_id=a),
    ]
    for row in rows:
        add(sessions, row)
    add(sessions, Review(feedback_id=rows[4].id, reviewer_id=ids["reviewer"], decision="edited", edited_text="E24"))
    add(sessions, Review(feedback_id=rows[4].id, reviewer_id=ids["reviewer"], decision="accepted"))
    with sessions() as s:
        exchange = s.get(Exchange, a)
        assert [f.kind for f in exchange.feedback] == [
            "thumbs",
            "thumbs",
            "rating",
            "comment",
            "correction",
            "preference",
        ]
        assert [r.decision for r in exchange.feedback[4].reviews] == ["edited", "accepted"]
        assert s.get(Exchange, b).feedback == []  # a preference hangs off the draft shown first only


BAD_FEEDBACK = {
    "rating above 5": dict(kind="rating", rating=6),
    "rating below 1": dict(kind="rating", rating=0),
    "rating without a rating": dict(kind="rating"),
    "thumbs without thumbs": dict(kind="thumbs"),
    "reason on a thumbs up": dict(kind="thumbs", thumbs=True, reason="wrong"),
    "correction without an answer": dict(kind="correction"),
    "preference of one draft over itself": dict(kind="preference", chosen_exchange_id="a", rejected_exchange_id="a"),
    "preference without the other draft": dict(kind="preference", chosen_exchange_id="a"),
    "feedback on a missing exchange": dict(kind="rating", rating=3, exchange_id=10_000),
    "preference for a missing exchange": dict(kind="preference", chosen_exchange_id="a", rejected_exchange_id=10_000),
}


@pytest.mark.parametrize("fields", BAD_FEEDBACK.values(), ids=BAD_FEEDBACK.keys())
def test_the_database_refuses_inconsistent_feedback(sessions, fields):
    ids = seed(sessions)
    fields = {k: ids[v] if isinstance(v, str) and k.endswith("_id") else v for k, v in fields.items()}
    with pytest.raises(IntegrityError):
        add(sessions, Feedback(**{"exchange_id": ids["a"], "user_id": ids["user"], **fields}))
    with sessions() as s:
        assert s.scalars(select(Feedback)).all() == []


def test_usernames_are_unique_and_references_must_exist(sessions):
    seed(sessions)
    with pytest.raises(IntegrityError):
        add(sessions, User(username="li.wei", password_hash="other"))
    with pytest.raises(IntegrityError):
        add(sessions, Conversation(user_id=10_000))
    with pytest.raises(IntegrityError):
        add(sessions, Review(feedback_id=10_000, reviewer_id=1, decision="accepted"))


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO users (username, password_hash, role, active, created_at) VALUES ('x', 'h', 'root', true, "
        "CURRENT_TIMESTAMP)",
        "INSERT INTO reviews (feedback_id, reviewer_id, decision, decided_at) VALUES (1, 1, 'maybe', "
        "CURRENT_TIMESTAMP)",
        "INSERT INTO reviews (feedback_id, reviewer_id, decision, decided_at) VALUES (1, 1, 'edited', "
        "CURRENT_TIMESTAMP)",
    ],
    ids=["unknown role", "unknown decision", "edited without the edit"],
)
def test_choices_are_checked_by_the_database_itself(sessions, statement):
    """Not only by SQLAlchemy: SQL written by hand (psql, a script) meets the same CHECKs."""
    ids = seed(sessions)
    add(sessions, Feedback(exchange_id=ids["a"], user_id=ids["user"], kind="rating", rating=3))
    with pytest.raises(IntegrityError), sessions.begin() as s:
        s.execute(text(statement))
