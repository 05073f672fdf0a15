"""What the admin dashboard (/admin) shows, as plain data: per model version and day, how many answers and judgements
came in, the thumbs-up rate and the abstention rate; and the worst-rated questions.

Days are UTC calendar days. An answer counts on the day it was given, a judgement on the day it was given, under the
version that wrote the answer it judges. Abstention is `eval.scoring.abstains` on the stored answer, as the A/B
report (app/ab.py) and drift count it. The worst-rated questions are the exchanges with at least one bad judgement
(thumbs down, or a rating of 1 or 2), ordered by their mean score, where thumbs up is 1, thumbs down 0 and a rating
r is (r - 1) / 4, then by how many bad judgements they got.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from hangjia.app.db.models import Exchange, Feedback, utcnow
from hangjia.app.review import queue
from hangjia.core.prompts import last_question
from hangjia.eval.scoring import abstains

BAD_RATING = 2


@dataclass
class Day:
    """One model version on one UTC day."""

    day: date
    version: str
    answers: int = 0
    abstained: int = 0
    feedback: int = 0
    """Judgements of any kind given that day on this version's answers."""
    thumbs_up: int = 0
    thumbs_down: int = 0

    @property
    def thumbs_up_rate(self) -> float | None:
        thumbs = self.thumbs_up + self.thumbs_down
        return self.thumbs_up / thumbs if thumbs else None

    @property
    def abstention_rate(self) -> float | None:
        return self.abstained / self.answers if self.answers else None


@dataclass
class Worst:
    """An exchange that people judged badly."""

    exchange_id: int
    question: str = ""
    answer: str = ""
    version: str = ""
    asked_at: datetime | None = None
    thumbs_up: int = 0
    thumbs_down: int = 0
    ratings: list[int] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    """Why thumbs down, how often."""
    scores: list[float] = field(default_factory=list)

    @property
    def mean_rating(self) -> float | None:
        return sum(self.ratings) / len(self.ratings) if self.ratings else None

    @property
    def score(self) -> float:
        """Mean judgement on 0 (bad) to 1 (good)."""
        return sum(self.scores) / len(self.scores)

    @property
    def bad(self) -> int:
        return self.thumbs_down + sum(r <= BAD_RATING for r in self.ratings)


def _since(days: int | None, now: datetime | None) -> datetime | None:
    """The start of the first of the last `days` UTC days (today included); None: all time."""
    if days is None:
        return None
    start = (now or utcnow()).astimezone(UTC).date() - timedelta(days=days - 1)
    return datetime(start.year, start.month, start.day, tzinfo=UTC)


def daily(session: Session, days: int | None = None, now: datetime | None = None) -> list[Day]:
    """Per (day, version), oldest day first, versions by name: answers, abstentions, judgements and thumbs; only
    the last `days` days (today included) when given."""
    since = _since(days, now)
    rows: dict[tuple[date, str], Day] = {}

    def row(when: datetime, version: str) -> Day:
        key = (when.date(), version)
        return rows.setdefault(key, Day(*key))

    answers = select(Exchange.model_version, Exchange.created_at, Exchange.answer)
    if since is not None:
        answers = answers.where(Exchange.created_at >= since)
    for version, created_at, answer in session.execute(answers):
        day = row(created_at, version)
        day.answers += 1
        day.abstained += abstains(answer)

    judged = select(Exchange.model_version, Feedback.created_at, Feedback.kind, Feedback.thumbs).join(
        Exchange, Feedback.exchange_id == Exchange.id
    )
    if since is not None:
        judged = judged.where(Feedback.created_at >= since)
    for version, created_at, kind, thumbs in session.execute(judged):
        day = row(created_at, version)
        day.feedback += 1
        if kind == "thumbs":
            day.thumbs_up += bool(thumbs)
            day.thumbs_down += not thumbs
    return [rows[key] for key in sorted(rows)]


def totals(days: list[Day]) -> list[Day]:
    """`daily`'s rows summed per version (their `day`: the last day the version had any), versions by name."""
    out: dict[str, Day] = {}
    for d in days:
        total = out.setdefault(d.version, Day(d.day, d.version))
        total.day = max(total.day, d.day)
        for name in ("answers", "abstained", "feedback", "thumbs_up", "thumbs_down"):
            setattr(total, name, getattr(total, name) + getattr(d, name))
    return [out[v] for v in sorted(out)]


def worst_questions(
    session: Session, limit: int = 10, days: int | None = None, now: datetime | None = None
) -> list[Worst]:
    """The `limit` worst-judged exchanges (see the module's docstring), worst first; judgements of the last `days`
    days only when given."""
    since = _since(days, now)
    query = (
        select(Feedback.exchange_id, Feedback.kind, Feedback.thumbs, Feedback.rating, Feedback.reason)
        .where(Feedback.kind.in_(("thumbs", "rating")))
        .order_by(Feedback.id)
    )
    if since is not None:
        query = query.where(Feedback.created_at >= since)
    judged: dict[int, list[tuple]] = {}
    for exchange_id, *judgement in session.execute(query):
        judged.setdefault(exchange_id, []).append(tuple(judgement))
    items = []
    for exchange_id, judgements in judged.items():
        item = Worst(exchange_id)
        for kind, thumbs, rating, reason in judgements:
            if kind == "thumbs":
                item.thumbs_up += bool(thumbs)
                item.thumbs_down += not thumbs
                item.scores.append(1.0 if thumbs else 0.0)
                if reason:
                    item.reasons[reason] += 1
            else:
                item.ratings.append(rating)
                item.scores.append((rating - 1) / 4)
        if item.bad:
            items.append(item)
    items.sort(key=lambda w: (w.score, -w.bad, -w.exchange_id))
    items = items[:limit]
    exchanges = {
        e.id: e for e in session.scalars(select(Exchange).where(Exchange.id.in_([w.exchange_id for w in items])))
    }
    for item in items:
        exchange = exchanges[item.exchange_id]
        item.question, item.answer = last_question(exchange.messages), exchange.answer
        item.version, item.asked_at = exchange.model_version, exchange.created_at
    return items


def review_counts(session: Session) -> dict[str, int]:
    """The review queue's state: how many judgements wait (`pending`) and how many were last decided accepted, edited
    or rejected."""
    counts = Counter({"pending": 0, "accepted": 0, "edited": 0, "rejected": 0})
    for _, review in queue(session, include_decided=True):
        counts["pending" if review is None else review.decision] += 1
    return dict(counts)
