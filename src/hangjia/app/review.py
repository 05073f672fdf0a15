"""The review queue and what comes out of it: feedback that a reviewer accepted, as training data.

Every judgement that could teach the model waits for a reviewer: corrections, preferences between two drafts, and
answers judged good (thumbs up, or a rating of 4 or 5). A reviewer (role reviewer or admin) accepts it, accepts an
edited text instead (a correction or a good answer put better), or rejects it; each decision is a row of its own, the
latest one counts, and who decided what and when stays recorded. Only accepted items become training data:

    SFT pairs   the question (with the passages the model was shown) → an accepted correction, or a good answer
    DPO pairs   the question → chosen and rejected: a picked draft over the other, or a correction over the answer

`export` writes them as two versioned datasets (`feedback_sft`, `feedback_dpo`: alpaca rows and TRL's
question/chosen/rejected triples) in the workspace's dataset store; each row names the feedback and exchange it came
from, and the version's manifest lists them all, so a model trained on it traces back to the judgements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hangjia.app.db.models import Exchange, Feedback, Review, User
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import last_question, with_context

GOOD_RATING = 4
REVIEWERS = ("reviewer", "admin")


def teaches(fb: Feedback) -> bool:
    """Whether a judgement could become training data (and so waits for a reviewer)."""
    return (
        fb.kind in ("correction", "preference")
        or (fb.kind == "thumbs" and bool(fb.thumbs))
        or (fb.kind == "rating" and (fb.rating or 0) >= GOOD_RATING)
    )


def latest_reviews(session: Session) -> dict[int, Review]:
    """feedback id → its latest decision."""
    rows = session.scalars(select(Review).order_by(Review.id))
    return {r.feedback_id: r for r in rows}


def queue(session: Session, include_decided: bool = False) -> list[tuple[Feedback, Review | None]]:
    """The judgements that could teach the model, oldest first, each with its latest decision (None: pending)."""
    decided = latest_reviews(session)
    items = [(fb, decided.get(fb.id)) for fb in session.scalars(select(Feedback).order_by(Feedback.id)) if teaches(fb)]
    return [(fb, r) for fb, r in items if include_decided or r is None]


def decide(session: Session, feedback_id: int, reviewer: str, decision: str, edited_text: str | None = None) -> Review:
    """Record a reviewer's decision (accepted, edited, rejected) on a judgement in the queue."""
    user = session.scalar(select(User).where(User.username == reviewer))
    if user is None or not user.active or user.role not in REVIEWERS:
        raise HangjiaError(
            f"'{reviewer}' is not an active reviewer; give --by the name of a user with the role reviewer or admin "
            "(`hangjia users role NAME reviewer`).",
            status_code=403,
        )
    fb = session.get(Feedback, feedback_id)
    if fb is None or not teaches(fb):
        raise HangjiaError(
            f"No judgement {feedback_id} waits for review (`hangjia review ls` lists them).", status_code=404
        )
    if decision == "edited" and not (edited_text or "").strip():
        raise HangjiaError("An edit needs the text that replaces the answer (--text).")
    if decision == "edited" and fb.kind == "preference":
        raise HangjiaError("A preference is accepted or rejected as it is; there is no text to edit.")
    review = Review(feedback_id=feedback_id, reviewer_id=user.id, decision=decision, edited_text=edited_text)
    session.add(review)
    session.flush()
    return review


@dataclass
class TrainingData:
    sft: list[dict[str, Any]]
    dpo: list[dict[str, Any]]


def _prompt(exchange: Exchange) -> str:
    """The question as the model read it: with the numbered passages it was shown, when there were any."""
    question = last_question(exchange.messages)
    passages = [SimpleNamespace(source=p.get("source", ""), text=p.get("text", "")) for p in exchange.passages or []]
    return with_context(question, passages)


def training_data(session: Session) -> TrainingData:
    """The accepted (or accepted-as-edited) judgements as SFT and DPO rows, oldest first."""
    sft, dpo = [], []
    for fb, review in queue(session, include_decided=True):
        if review is None or review.decision == "rejected":
            continue
        exchange = session.get(Exchange, fb.exchange_id)
        origin = {"feedback_id": fb.id, "exchange_id": exchange.id, "review_id": review.id, "kind": fb.kind}
        if fb.kind == "preference":
            chosen, rejected = (
                session.get(Exchange, fb.chosen_exchange_id),
                session.get(Exchange, fb.rejected_exchange_id),
            )
            dpo.append({"question": _prompt(chosen), "chosen": chosen.answer, "rejected": rejected.answer, **origin})
            continue
        better = review.edited_text if review.decision == "edited" else None
        answer = better or (fb.corrected_answer if fb.kind == "correction" else exchange.answer)
        sft.append({"instruction": _prompt(exchange), "input": "", "output": answer, **origin})
        if fb.kind == "correction" and answer.strip() != exchange.answer.strip():
            dpo.append({"question": _prompt(exchange), "chosen": answer, "rejected": exchange.answer, **origin})
    return TrainingData(sft, dpo)


def export(session: Session, datasets: Path, database: str) -> dict[str, Any]:
    """Write the accepted feedback as the datasets feedback_sft and feedback_dpo (a new version only when the rows
    changed); what was written."""
    import pyarrow as pa

    from hangjia.corpus.datasets import DatasetStore

    data = training_data(session)
    store = DatasetStore(datasets)
    written: dict[str, Any] = {}
    for name, rows in (("feedback_sft", data.sft), ("feedback_dpo", data.dpo)):
        if not rows:
            written[name] = None
            continue
        version = store.save(
            name,
            pa.Table.from_pylist(rows),
            stage="feedback export",
            config={"database": database},
            stats={"rows": len(rows), "feedback_ids": sorted({r["feedback_id"] for r in rows})},
        )
        written[name] = {"ref": version.ref, "rows": len(rows)}
    return written
