"""POST /v1/feedback: a judgement of an answer, stored and committed before the reply (app/exchanges.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from hangjia.app.deps import StoreDep
from hangjia.app.schemas import FeedbackCreated, FeedbackRequest
from hangjia.core.errors import HangjiaError

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback", status_code=201)
async def feedback(body: FeedbackRequest, store: StoreDep) -> FeedbackCreated:
    """Thumbs, a rating, a comment, a correction or a preference between two drafts, for an answer's `exchange_id`."""
    if store is None:
        raise HangjiaError(
            "This server records no answers (serve.record is off), so there is nothing to judge.", status_code=404
        )
    fields = body.model_dump(exclude={"user"}, exclude_none=True)
    return FeedbackCreated(id=await run_in_threadpool(store.feedback, fields, body.user))
