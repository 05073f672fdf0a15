"""The admin dashboard's queries (app/dashboard.py) on SQLite and PostgreSQL, over rows written as the server writes
them (ExchangeStore) and decided as a reviewer decides them (review.decide)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import update

from hangjia.app.dashboard import daily, review_counts, totals, worst_questions
from hangjia.app.db.models import Exchange, Feedback, User
from hangjia.app.db.schema import upgrade
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.review import decide

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
TODAY, YESTERDAY, LONG_AGO = NOW.date(), NOW.date() - timedelta(days=1), NOW.date() - timedelta(days=30)


@pytest.fixture
def store(db_url):
    upgrade(db_url)
    store = ExchangeStore(db_url)
    with store.sessions.begin() as s:
        s.add(User(username="rita", password_hash="x", role="reviewer"))
    yield store
    store.close()


def ask(store: ExchangeStore, question: str, answer: str, version: str, day: date) -> int:
    """An exchange answered by `version` at noon (UTC) of `day`."""
    exchange_id = store.record(
        model="domain",
        version=version,
        messages=[{"role": "user", "content": question}],
        passages=[{"index": 1, "source": "manual.md", "text": "E24: the drain is blocked."}],
        answer=answer,
        latency_ms=5,
        user="ana",
    )
    with store.sessions.begin() as s:
        s.execute(update(Exchange).where(Exchange.id == exchange_id).values(created_at=_noon(day)))
    return exchange_id


def judge(store: ExchangeStore, exchange_id: int, day: date, **fields) -> int:
    feedback_id = store.feedback({"exchange_id": exchange_id, **fields}, "ana")
    with store.sessions.begin() as s:
        s.execute(update(Feedback).where(Feedback.id == feedback_id).values(created_at=_noon(day)))
    return feedback_id


def _noon(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)


def test_volume_thumbs_up_and_abstention_per_version_and_day(store):
    old = ask(store, "What is E24?", "A door error.", "domain@1", LONG_AGO)
    a = ask(store, "What is E24?", "The drain is blocked [1].", "domain@1", YESTERDAY)
    b = ask(store, "Who won the 1998 final?", "The documents do not say.", "domain@1", YESTERDAY)
    c = ask(store, "What is E24?", "The drain is blocked [1].", "domain@2", TODAY)
    d = ask(store, "How do I descale?", "文档中没有这方面的信息。", "domain@2", TODAY)
    judge(store, old, LONG_AGO, kind="thumbs", thumbs=False, reason="wrong")
    judge(store, a, YESTERDAY, kind="thumbs", thumbs=True)
    judge(store, b, TODAY, kind="thumbs", thumbs=False, reason="not_in_documents")  # counts on the day it was given
    judge(store, c, TODAY, kind="thumbs", thumbs=True)
    judge(store, c, TODAY, kind="rating", rating=5)
    judge(store, d, TODAY, kind="correction", corrected_answer="Run the descaling programme.")

    with store.sessions() as s:
        rows = daily(s)
        recent = daily(s, days=2, now=NOW)
    got = [(r.day, r.version, r.answers, r.abstained, r.feedback, r.thumbs_up, r.thumbs_down) for r in rows]
    assert got == [
        (LONG_AGO, "domain@1", 1, 0, 1, 0, 1),
        (YESTERDAY, "domain@1", 2, 1, 1, 1, 0),
        (TODAY, "domain@1", 0, 0, 1, 0, 1),
        (TODAY, "domain@2", 2, 1, 3, 1, 0),
    ]
    assert [r.day for r in recent] == [YESTERDAY, TODAY, TODAY]  # the last two days only
    assert [(r.thumbs_up_rate, r.abstention_rate) for r in recent] == [(1.0, 0.5), (0.0, None), (1.0, 0.5)]

    summed = totals(rows)
    assert [(t.version, t.day, t.answers, t.abstained, t.feedback) for t in summed] == [
        ("domain@1", TODAY, 3, 1, 3),
        ("domain@2", TODAY, 2, 1, 3),
    ]
    assert summed[0].thumbs_up_rate == pytest.approx(1 / 3)


def test_worst_rated_questions_come_first_with_their_answer_and_version(store):
    bad = ask(store, "What is E24?", "A door error.", "domain@1", YESTERDAY)
    mixed = ask(store, "How do I descale?", "Use vinegar.", "domain@2", TODAY)
    good = ask(store, "What is E24?", "The drain is blocked [1].", "domain@2", TODAY)
    low = ask(store, "Is the pump covered?", "No.", "domain@2", TODAY)
    judge(store, bad, YESTERDAY, kind="thumbs", thumbs=False, reason="wrong")
    judge(store, bad, TODAY, kind="thumbs", thumbs=False, reason="wrong")
    judge(store, bad, TODAY, kind="rating", rating=1)
    judge(store, mixed, TODAY, kind="thumbs", thumbs=True)
    judge(store, mixed, TODAY, kind="thumbs", thumbs=False, reason="incomplete")
    judge(store, good, TODAY, kind="thumbs", thumbs=True)
    judge(store, good, TODAY, kind="rating", rating=4)
    judge(store, low, TODAY, kind="rating", rating=2)
    judge(store, low, TODAY, kind="comment", comment="Too short.")  # no score

    with store.sessions() as s:
        worst = worst_questions(s)
        top = worst_questions(s, limit=1)
        today_only = worst_questions(s, days=1, now=NOW)
    # bad scores 0, low 0.25, mixed 0.5; good (no bad judgement) is not listed.
    assert [w.exchange_id for w in worst] == [bad, low, mixed]
    first = worst[0]
    assert (first.question, first.answer, first.version) == ("What is E24?", "A door error.", "domain@1")
    assert (first.thumbs_down, first.thumbs_up, first.ratings, first.mean_rating) == (2, 0, [1], 1.0)
    assert first.reasons == {"wrong": 2} and first.bad == 3 and first.score == 0
    assert first.asked_at == _noon(YESTERDAY)
    assert worst[1].mean_rating == 2.0 and worst[1].score == pytest.approx(0.25)
    assert [w.exchange_id for w in top] == [bad]
    assert [(w.exchange_id, w.thumbs_down) for w in today_only][0] == (bad, 1)  # yesterday's thumbs down left out


def test_review_counts_follow_the_latest_decisions(store):
    a = ask(store, "What is E24?", "A door error.", "domain@1", TODAY)
    fix = judge(store, a, TODAY, kind="correction", corrected_answer="The drain is blocked.")
    liked = judge(store, a, TODAY, kind="rating", rating=5)
    judge(store, a, TODAY, kind="thumbs", thumbs=True)  # waits
    judge(store, a, TODAY, kind="thumbs", thumbs=False, reason="wrong")  # teaches nothing: never in the queue
    with store.sessions.begin() as s:
        decide(s, fix, "rita", "rejected")
        decide(s, fix, "rita", "edited", "The drain pump is blocked.")  # the latest decision counts
        decide(s, liked, "rita", "accepted")
    with store.sessions() as s:
        assert review_counts(s) == {"pending": 1, "accepted": 1, "edited": 1, "rejected": 0}


def test_an_empty_database_has_no_rows(store):
    with store.sessions() as s:
        assert daily(s) == [] and worst_questions(s) == []
        assert review_counts(s) == {"pending": 0, "accepted": 0, "edited": 0, "rejected": 0}
