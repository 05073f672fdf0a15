"""OpenAI-compatible routes: GET /v1/models and POST /v1/chat/completions (plain and SSE streaming).

Generation blocks for seconds on a CPU, so every engine call runs in the threadpool and the event
loop stays free for /health, /ready and other clients.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from hangjia.app.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorDetail,
    ErrorResponse,
    Model,
    ModelList,
    Usage,
)
from hangjia.core.config import ServeConfig
from hangjia.llm.generation import Completion, Engine, GenerationParams


# Typed dependencies, FastAPI-template style. They live beside the first router that needs them and
# app.py imports them from here (a serve/deps.py once a second router arrives).
def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_serve_config(request: Request) -> ServeConfig:
    return request.app.state.serve_config


EngineDep = Annotated[Engine, Depends(get_engine)]
ServeConfigDep = Annotated[ServeConfig, Depends(get_serve_config)]

router = APIRouter(prefix="/v1", tags=["openai"])


class StopScanner:
    """Turns raw text deltas into what the client sees: trimmed like `Engine.chat` trims its text, and cut
    before the first stop string. Holds back only what may still turn out to be trailing whitespace or
    the start of a stop string, so streamed pieces always join up to the non-streaming answer."""

    def __init__(self, stop: list[str]):
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.started = False
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.started:
            piece = piece.lstrip()
            self.started = bool(piece)
        self.pending += piece
        cuts = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.pending = self.pending[: min(cuts)].rstrip(), ""
            return out
        split = len(self.pending) - self._stop_prefix_len()
        split = len(self.pending[:split].rstrip())
        out, self.pending = self.pending[:split], self.pending[split:]
        return out

    def finish(self) -> str:
        """The held-back tail once the model is done: a stop-string prefix that never completed is text."""
        out, self.pending = ("" if self.stopped else self.pending.rstrip()), ""
        return out

    def _stop_prefix_len(self) -> int:
        """Length of the longest end of `pending` that a stop string starts with."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(s[:n]):
                    longest = n
                    break
        return longest


def _created(path: Path | None) -> int:
    return int(path.stat().st_mtime) if path is not None and path.exists() else int(time.time())


@router.get("/models")
async def list_models(engine: EngineDep) -> ModelList:
    created = {"base": _created(engine.base_dir), "domain": _created(engine.adapter_dir)}
    return ModelList(data=[Model(id=name, created=created[name]) for name in engine.model_names])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, engine: EngineDep, serve_config: ServeConfigDep
) -> ChatCompletion | StreamingResponse:
    engine.check_model(body.model)
    rag = body.rag if body.rag is not None else engine.default_rag(body.model)
    messages = [m.to_engine() for m in body.messages]
    params = GenerationParams(
        max_new_tokens=body.max_completion_tokens or body.max_tokens or serve_config.max_new_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
    )
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        # Called before the response starts, so a bad request (e.g. RAG without an index) is still a 4xx.
        citations, deltas, summary = await run_in_threadpool(engine.stream, messages, body.model, params, rag)
        chunk = _ChunkMaker(request_id, created, body.model)
        scanner = StopScanner(body.stop_list)
        citations = citations if rag else None
        events = _sse_events(chunk, deltas, summary, scanner, citations=citations, include_usage=body.include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    completion = await run_in_threadpool(engine.chat, messages, body.model, params, rag)
    scanner = StopScanner(body.stop_list)
    text = scanner.feed(completion.text) + scanner.finish()
    return ChatCompletion(
        id=request_id,
        created=created,
        model=body.model,
        choices=[Choice(message=AssistantMessage(content=text), finish_reason=_finish(scanner, completion))],
        usage=_usage(completion),
        citations=completion.citations if rag else None,
    )


def _finish(scanner: StopScanner, completion: Completion) -> str:
    return "stop" if scanner.stopped else completion.finish_reason


def _usage(completion: Completion) -> Usage:
    return Usage(
        prompt_tokens=completion.prompt_tokens,
        completion_tokens=completion.completion_tokens,
        total_tokens=completion.prompt_tokens + completion.completion_tokens,
    )


class _ChunkMaker:
    """`data: {...}` lines of one streamed completion, which all share its id, time and model."""

    def __init__(self, request_id: str, created: int, model: str):
        self.fields = {"id": request_id, "created": created, "model": model}

    def __call__(self, delta: Delta | None = None, finish_reason: str | None = None, **extra) -> str:
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
        return _sse(ChatCompletionChunk(**self.fields, choices=choices, **extra))


def _sse(payload: ChatCompletionChunk | ErrorResponse) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


async def _sse_events(
    chunk: _ChunkMaker,
    deltas: Iterator[str],
    summary: Completion,
    scanner: StopScanner,
    *,
    citations: list[dict] | None,
    include_usage: bool,
) -> AsyncIterator[str]:
    """Role, content pieces, finish reason, [usage], [DONE]; stops sending text at a stop string."""
    yield chunk(Delta(role="assistant", content=""), citations=citations)
    async for piece in iterate_in_threadpool(deltas):
        if scanner.stopped:
            continue  # drain the rest: the usage counts are final only once the engine is done
        text = scanner.feed(piece)
        if text:
            yield chunk(Delta(content=text))
        if scanner.stopped:
            yield chunk(Delta(), finish_reason="stop")
    if summary.finish_reason == "error":
        error = ErrorDetail(message="Generation failed; see the server log.", type="server_error")
        yield _sse(ErrorResponse(error=error))
        yield "data: [DONE]\n\n"
        return
    if not scanner.stopped:
        tail = scanner.finish()
        if tail:
            yield chunk(Delta(content=tail))
        yield chunk(Delta(), finish_reason=summary.finish_reason)
    if include_usage:
        yield chunk(usage=_usage(summary))
    yield "data: [DONE]\n\n"
