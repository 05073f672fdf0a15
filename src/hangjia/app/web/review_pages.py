"""The review queue in the browser (/review, reviewers and admins): the judgements that could teach the model, each
with the question, the model's answer, what the user proposed (a correction, the draft picked of two, or "keep this
answer"), who gave it, the version that answered and its passages; per item Accept, Edit (the text to train on) and
Reject, which record `review.decide` under the signed-in reviewer's name. `?show=decided` lists the decided ones with
every decision made on them (who, what, when). The pages for one role only answer others with a page saying so (403).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from hangjia.app.auth import AuthDep, UserDep, check_csrf, require_role
from hangjia.app.db.models import Decision, Exchange, Feedback, Role, User
from hangjia.app.review import decide as record_decision
from hangjia.app.review import queue
from hangjia.app.web.i18n import LABELS, language
from hangjia.app.web.pages import render
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import last_question

router = APIRouter(tags=["web"], include_in_schema=False, dependencies=[Depends(check_csrf)])

PASSAGE_CHARS = 240
"""A passage is shown up to this many characters (the whole one is in the exchange)."""
SHOWN = 200
"""The most items one page lists (the oldest waiting ones, or the latest decided)."""
DECISIONS: tuple[Decision, ...] = ("accepted", "edited", "rejected")


class PageForbidden(Exception):
    """A signed-in user asked for a page of a higher role: answered with a page that says whose it is (403)."""

    def __init__(self, role: Role):
        self.role = role


def page_for(role: Role):
    """A dependency like `auth.require_role`, for pages: a user below `role` gets a readable 403 page, not JSON."""
    check = require_role(role)

    def dependency(user: UserDep) -> User:
        try:
            return check(user)
        except HTTPException:
            raise PageForbidden(role) from None

    return dependency


async def forbidden(request: Request, exc: PageForbidden) -> Response:
    auth = request.app.state.auth
    t = LABELS[language(request)]
    return render(request, auth, "forbidden.html", 403, message=t[f"only_{exc.role}"])


Reviewer = Annotated[User, Depends(page_for("reviewer"))]


@dataclass
class Draft:
    answer: str
    version: str
    picked: bool


@dataclass
class Decided:
    by: str
    decision: Decision
    edited_text: str | None
    at: str


@dataclass
class Item:
    """One judgement as the page shows it."""

    id: int
    kind: str
    by: str
    at: str
    question: str
    answer: str
    version: str
    rating: int | None = None
    correction: str | None = None
    comment: str | None = None
    drafts: list[Draft] = field(default_factory=list)
    passages: list[dict] = field(default_factory=list)
    editable: str | None = None
    """The text the Edit box starts from (the correction, or the answer judged good); None: nothing to edit."""
    history: list[Decided] = field(default_factory=list)


def when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def items(session: Session, decided: bool) -> tuple[list[Item], dict[str, int]]:
    """The waiting judgements (oldest first) or the decided ones (latest decision first), at most SHOWN, and how
    many of each there are."""
    everything = queue(session, include_decided=True)
    counts = {"pending": sum(r is None for _, r in everything), "decided": sum(r is not None for _, r in everything)}
    chosen = [(fb, r) for fb, r in everything if (r is not None) == decided]
    if decided:
        chosen.sort(key=lambda pair: pair[1].id, reverse=True)
    names = dict(session.execute(select(User.id, User.username)).all())
    return [_item(session, fb, names) for fb, _ in chosen[:SHOWN]], counts


def _item(session: Session, fb: Feedback, names: dict[int, str]) -> Item:
    exchange = session.get(Exchange, fb.exchange_id)
    item = Item(
        id=fb.id,
        kind=fb.kind,
        by=names.get(fb.user_id, "?"),
        at=when(fb.created_at),
        question=last_question(exchange.messages),
        answer=exchange.answer,
        version=exchange.model_version,
        rating=fb.rating,
        correction=fb.corrected_answer,
        comment=fb.comment,
        history=[
            Decided(names.get(r.reviewer_id, "?"), r.decision, r.edited_text, when(r.decided_at)) for r in fb.reviews
        ],
    )
    if fb.kind == "preference":
        for exchange_id, picked in ((fb.chosen_exchange_id, True), (fb.rejected_exchange_id, False)):
            draft = session.get(Exchange, exchange_id)
            item.drafts.append(Draft(draft.answer, draft.model_version, picked))
        item.drafts.sort(key=lambda d: d.picked is False)  # the one picked first
    else:
        item.editable = fb.corrected_answer if fb.kind == "correction" else exchange.answer
    item.passages = [
        {
            "index": p.get("index", n),
            "source": p.get("source", ""),
            "text": _short(p.get("text", "")),
            "cited": bool(p.get("cited")),
        }
        for n, p in enumerate(exchange.passages or [], 1)
    ]
    return item


def _short(text: str) -> str:
    return text if len(text) <= PASSAGE_CHARS else text[: PASSAGE_CHARS - 1].rstrip() + "…"


def _page(request: Request, auth: AuthDep, show: str, status_code: int = 200, **context) -> Response:
    with auth.accounts.sessions() as session:
        listed, counts = items(session, decided=show == "decided")
        return render(request, auth, "review.html", status_code, items=listed, counts=counts, show=show, **context)


@router.get("/review")
def review(
    request: Request,
    auth: AuthDep,
    user: Reviewer,
    show: Literal["pending", "decided"] = "pending",
    done: int | None = None,
    decision: Decision | None = None,
) -> Response:
    """The queue; after a decision (`done`, `decision`: where a POST sends the browser back) a line saying so."""
    notice = None
    if done is not None and decision is not None:
        t = LABELS[language(request)]
        notice = t["decided_notice"].format(id=done, decision=t[f"decision_{decision}"])
    return _page(request, auth, show, notice=notice)


@router.post("/review/{feedback_id}")
def decide(
    request: Request,
    auth: AuthDep,
    user: Reviewer,
    feedback_id: int,
    decision: Annotated[Decision, Form()],
    edited_text: Annotated[str | None, Form(max_length=20_000)] = None,
    show: Annotated[Literal["pending", "decided"], Form()] = "pending",
) -> Response:
    """Record the signed-in reviewer's decision, then back to the queue (303); a refused one shows the queue with
    the reason, under its status."""
    try:
        with auth.accounts.sessions.begin() as session:
            record_decision(
                session, feedback_id, user.username, decision, edited_text if decision == "edited" else None
            )
    except HangjiaError as err:
        return _page(request, auth, show, err.status_code, error=err.message)
    query = {"lang": language(request), "done": feedback_id, "decision": decision}
    if show == "decided":
        query["show"] = show
    return RedirectResponse(f"/review?{urlencode(query)}#queue", 303)
