"""The web chat's own routes (static/chat.js calls them): questions asked as the signed-in user, saved conversations,
two drafts side by side, and feedback, all behind the session cookie and its CSRF token.

/v1 trusts the `user` its body names, as OpenAI clients expect; the web app must not, so its questions go to
POST /chat/completions, which sets `user` to the signed-in name and answers with the same code as
/v1/chat/completions (`openai_api.answer_chat`), recording each exchange under its conversation. A conversation is
made by the first question that names none (its id comes back in the `X-Conversation-Id` header) and titled with that
question; its owner alone may list, open or continue it: another user's id is a 404, as if it did not exist.

Two drafts: the page sends the same question twice, with `draft` 0 and 1. Where two versions can be compared (an A/B
test on the name asked for: the model and its candidate; else another served version of it, a `candidate` alias
first) each draft is one version, with the same seed; otherwise both are the name asked for, sampled at a temperature
above 0 with seeds one apart. The user's pick is a `preference` feedback row naming the chosen and the rejected
exchange; a reopened conversation shows the chosen draft as its answer (and an unpicked pair as two drafts again).
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import exists, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hangjia.app.auth import UserDep, check_csrf
from hangjia.app.db.models import Conversation, Exchange, Feedback, User
from hangjia.app.deps import StoreDep
from hangjia.app.exchanges import ExchangeStore, scrub
from hangjia.app.openai_api import Services, ServicesDep, answer_chat
from hangjia.app.schemas import ChatCompletionRequest, FeedbackCreated, FeedbackRequest
from hangjia.core.citations import mark_cited
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import last_question
from hangjia.llm.weights import BASE

router = APIRouter(prefix="/chat", tags=["web"], include_in_schema=False, dependencies=[Depends(check_csrf)])

CONVERSATION_HEADER = "X-Conversation-Id"
TITLE_CHARS = 60
DRAFT_TEMPERATURE = 0.8
"""Two samples of one model: the temperature when the request gives none above 0 (greedy drafts would be the same)."""


class WebChatRequest(ChatCompletionRequest):
    conversation_id: int | None = None
    """The conversation this question continues; none: a new one, titled with the question."""
    draft: Literal[0, 1] | None = None
    """One of two drafts of the same answer (see the module's text)."""


def title(question: str) -> str:
    """A conversation's title: its first question, personal data replaced, on one line, cut to TITLE_CHARS."""
    text = " ".join(scrub(question).split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "…"


def _missing(what: str = "conversation") -> HangjiaError:
    return HangjiaError(f"No such {what}.", status_code=404)


def _owned(session: Session, user: User, conversation_id: int) -> Conversation:
    """The user's conversation `conversation_id`; another user's is a 404, like one that does not exist."""
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user.id:
        raise _missing()
    return conversation


def _conversation(store: ExchangeStore, user: User, conversation_id: int | None, question: str) -> int:
    """The id of the conversation a question goes to: the user's `conversation_id`, or a new one."""
    with store.sessions.begin() as session:
        if conversation_id is not None:
            return _owned(session, user, conversation_id).id
        conversation = Conversation(user_id=user.id, title=title(question))
        session.add(conversation)
        session.flush()
        return conversation.id


async def _draft(services: Services, body: WebChatRequest) -> tuple[dict[str, Any], bool]:
    """What draft `body.draft` changes in the request, and whether the A/B test may still move it (not when the
    drafts are its two sides)."""
    pair = await run_in_threadpool(versions_pair, services, body.model)
    if pair is not None:
        return {"model": pair[body.draft]}, False
    temperature = body.temperature if body.temperature else DRAFT_TEMPERATURE
    seed = (secrets.randbelow(2**31) if body.seed is None else body.seed) + body.draft
    return {"temperature": temperature, "seed": seed}, True


def versions_pair(services: Services, asked: str) -> tuple[str, str] | None:
    """The two names whose answers two drafts of a question for `asked` compare: the A/B test's model and candidate
    when `asked` is its model; else `asked` and another served version of it (a name that answers with other weights,
    not `base`; a `candidate` alias first); None when there is none (then the drafts are two samples)."""
    ab = services.serve_config.ab
    if ab is not None and asked == ab.model:
        return asked, ab.candidate
    if asked == BASE:
        return None
    versions = services.versions
    mine = versions.resolve(asked)
    names = [*services.engine.model_names, *versions.aliases]
    others = [n for n in names if n not in (BASE, asked) and versions.resolve(n) != mine]
    others.sort(key=lambda name: "candidate" not in name)
    return (asked, others[0]) if others else None


@router.post("/completions", response_model=None)
async def completions(
    body: WebChatRequest, request: Request, response: Response, user: UserDep, services: ServicesDep
) -> Any:
    """A question from the chat page, answered as /v1/chat/completions answers it, as the signed-in user."""
    store = services.store
    conversation_id = None
    if store is not None:
        question = last_question([m.to_engine() for m in body.messages])
        conversation_id = await run_in_threadpool(_conversation, store, user, body.conversation_id, question)
    update: dict[str, Any] = {"user": user.username}
    split = True
    if body.draft is not None:
        changes, split = await _draft(services, body)
        update |= changes
    asked = body.model_copy(update=update)
    answer = await answer_chat(asked, request, services, conversation_id=conversation_id, split=split)
    if conversation_id is not None:
        (answer if isinstance(answer, Response) else response).headers[CONVERSATION_HEADER] = str(conversation_id)
    return answer


@router.get("/conversations")
def conversations(user: UserDep, store: StoreDep) -> list[dict[str, Any]]:
    """The user's conversations that have an answer, newest first."""
    if store is None:
        return []
    answered = exists().where(Exchange.conversation_id == Conversation.id)
    query = (
        select(Conversation)
        .where(Conversation.user_id == user.id, answered)
        .order_by(Conversation.created_at.desc(), Conversation.id.desc())
    )
    with store.sessions() as session:
        rows = session.scalars(query).all()
        return [{"id": c.id, "title": c.title, "created_at": c.created_at.isoformat()} for c in rows]


@router.get("/conversations/{conversation_id}")
def conversation(conversation_id: int, user: UserDep, store: StoreDep) -> dict[str, Any]:
    """One of the user's conversations as the page shows it again: its turns in order, each a question with its answer,
    passages and exchange id, or with `drafts` (two such answers) while no pick was made between them."""
    if store is None:
        raise _missing()
    with store.sessions() as session:
        found = _owned(session, user, conversation_id)
        exchanges = list(found.exchanges)
        ids = [e.id for e in exchanges]
        picks = session.execute(
            select(Feedback.chosen_exchange_id, Feedback.rejected_exchange_id)
            .where(Feedback.kind == "preference", Feedback.chosen_exchange_id.in_(ids))
            .order_by(Feedback.id)
        ).all()
        return {"id": found.id, "title": found.title, "turns": turns(exchanges, picks)}


def turns(exchanges: list[Exchange], picks: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """The exchanges of a conversation as turns. Two drafts of one question (the same messages, one after the other)
    are one turn: the chosen draft once picked (the latest pick counts), else both drafts."""
    picked = {frozenset(pick): pick[0] for pick in picks}
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(exchanges):
        exchange, twin = exchanges[i], exchanges[i + 1] if i + 1 < len(exchanges) else None
        turn: dict[str, Any] = {"question": last_question(exchange.messages)}
        if twin is not None and twin.messages == exchange.messages:
            chosen = picked.get(frozenset((exchange.id, twin.id)))
            if chosen is None:
                turn["drafts"] = [_answer(exchange), _answer(twin)]
            else:
                turn |= _answer(exchange if exchange.id == chosen else twin)
            i += 2
        else:
            turn |= _answer(exchange)
            i += 1
        out.append(turn)
    return out


def _answer(exchange: Exchange) -> dict[str, Any]:
    """A stored answer with its passages, the cited ones marked as the stream's last chunk marked them."""
    cited = mark_cited(exchange.passages, [exchange.answer]) if exchange.passages else []
    return {"answer": exchange.answer, "citations": cited, "exchange_id": exchange.id}


@router.post("/feedback", status_code=201)
async def feedback(body: FeedbackRequest, user: UserDep, store: StoreDep) -> FeedbackCreated:
    """A judgement from the chat page, as /v1/feedback takes it, given by the signed-in user of their own answers."""
    if store is None:
        raise HangjiaError(
            "This server records no answers (serve.record is off), so there is nothing to judge.", status_code=404
        )
    fields = body.model_dump(exclude={"user"}, exclude_none=True)
    judged = {fields["exchange_id"], *(fields.get(k) for k in ("chosen_exchange_id", "rejected_exchange_id"))} - {None}
    owners = await run_in_threadpool(_owners, store, judged)
    if len(owners) != len(judged) or set(owners.values()) != {user.id}:
        raise _missing("answer of yours")
    return FeedbackCreated(id=await run_in_threadpool(store.feedback, fields, user.username))


def _owners(store: ExchangeStore, ids: set[int]) -> dict[int, int | None]:
    with store.sessions() as session:
        return dict(session.execute(select(Exchange.id, Exchange.user_id).where(Exchange.id.in_(ids))).all())
