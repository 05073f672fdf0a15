"""How an answer goes out on the wire: OpenAI's Server-Sent Events (`data: {...}` chunks ending in `data: [DONE]`)
for chat and text completions, the stop strings cut out of the streamed text, and the admitted request's slot, freed
when its stream ends, fails or its client goes away (app/openai_api.py admits requests and calls these).

    engine deltas ──StopScanner──► ChatChunks / TextChunks ──sse──► the client
          │                                     ▲
          └── a cached answer: replay ──────────┘   (one piece, the same chunk sequence)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from hangjia.app.admission import Admission
from hangjia.app.cache import Entry
from hangjia.app.metrics import RequestRecord
from hangjia.app.schemas import (
    ChatCompletionChunk,
    ChunkChoice,
    Delta,
    ErrorDetail,
    ErrorResponse,
    TextChoice,
    TextCompletion,
    Usage,
)
from hangjia.app.versions import Versions
from hangjia.llm.generation import Completion, Control

DISCONNECT_POLL_S = 0.1  # how often a generating request checks that its client is still there


class StopScanner:
    """Turns raw text deltas into what the client sees: trimmed like `Engine.chat` trims its text, and cut
    before the first stop string. Holds back only what may still turn out to be trailing whitespace or
    the start of a stop string, so streamed pieces always join up to the non-streaming answer."""

    def __init__(self, stop: list[str], trim: bool = True):
        self.stop = [s for s in stop if s]
        self.trim = trim  # chat answers are trimmed; /v1/completions text is returned as generated
        self.pending = ""
        self.started = False
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        if not self.started and self.trim:
            piece = piece.lstrip()
            self.started = bool(piece)
        self.pending += piece
        cuts = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.pending = self._trimmed(self.pending[: min(cuts)]), ""
            return out
        split = len(self.pending) - self._stop_prefix_len()
        split = len(self._trimmed(self.pending[:split]))
        out, self.pending = self.pending[:split], self.pending[split:]
        return out

    def finish(self) -> str:
        """The held-back tail once the model is done: a stop-string prefix that never completed is text."""
        out, self.pending = ("" if self.stopped else self._trimmed(self.pending)), ""
        return out

    def _trimmed(self, text: str) -> str:
        return text.rstrip() if self.trim else text

    def _stop_prefix_len(self) -> int:
        """Length of the longest end of `pending` that a stop string starts with."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(s[:n]):
                    longest = n
                    break
        return longest


class Slot:
    """One admitted request: its metrics record, its admission slot, its hold on its model version and its decoding
    control."""

    def __init__(self, record: RequestRecord, admission: Admission, versions: Versions, model: str):
        self.record, self.admission, self.versions, self.model = record, admission, versions, model
        self.control = Control(on_step=record.step)
        self.closed = False
        self.admitted_at = time.monotonic()

    def close(self) -> None:
        """Stop decoding if it still runs, leave the gauges, free the slot and the version; safe to call twice."""
        self.control.cancel.set()
        if not self.closed:
            self.closed = True
            self.record.close()
            self.admission.leave(held_s=time.monotonic() - self.admitted_at)
            self.versions.release(self.model)


@asynccontextmanager
async def cancel_on_disconnect(request: Request, control: Control) -> AsyncIterator[None]:
    """Set the request's cancel event as soon as its client disconnects (checked every DISCONNECT_POLL_S)."""

    async def watch() -> None:
        while not control.cancel.is_set():
            if await request.is_disconnected():
                control.cancel.set()
                return
            await asyncio.sleep(DISCONNECT_POLL_S)

    task = asyncio.create_task(watch())
    try:
        yield
    finally:
        task.cancel()


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def token_usage(prompts: list[Completion], answers: list[Completion]) -> Usage:
    """Each prompt counted once (n answers share it), every answer's tokens."""
    prompt = sum(c.prompt_tokens for c in prompts)
    completion = sum(c.completion_tokens for c in answers)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class ChatChunks:
    """`data: {...}` lines of one streamed chat completion, which all share its id, time and model."""

    def __init__(self, request_id: str, created: int, model: str):
        self.fields = {"id": request_id, "created": created, "model": model}

    def __call__(self, delta: Delta | None = None, finish_reason: str | None = None, **extra) -> str:
        choices = [] if delta is None else [ChunkChoice(delta=delta, finish_reason=finish_reason)]
        return sse(ChatCompletionChunk(**self.fields, choices=choices, **extra))

    def first(self, **extra) -> str | None:
        return self(Delta(role="assistant", content=""), **extra)

    def text(self, text: str) -> str:
        return self(Delta(content=text))

    def finish(self, reason: str, **extra) -> str:
        return self(Delta(), finish_reason=reason, **extra)

    def usage(self, usage: Usage) -> str:
        return self(usage=usage)


class TextChunks:
    """`data: {...}` lines of one streamed text completion."""

    def __init__(self, request_id: str, created: int, model: str):
        self.fields = {"id": request_id, "created": created, "model": model}

    def _chunk(self, choices: list[TextChoice], usage: Usage | None = None) -> str:
        return sse(TextCompletion(**self.fields, choices=choices, usage=usage))

    def first(self, **extra) -> str | None:
        return None

    def text(self, text: str) -> str:
        return self._chunk([TextChoice(text=text)])

    def finish(self, reason: str, **extra) -> str:
        return self._chunk([TextChoice(text="", finish_reason=reason)])

    def usage(self, usage: Usage) -> str:
        return self._chunk([], usage)


def sse(payload: ChatCompletionChunk | TextCompletion | ErrorResponse) -> str:
    return f"data: {payload.model_dump_json()}\n\n"


async def sse_events(
    maker: ChatChunks | TextChunks,
    deltas: Iterator[str],
    summary: Completion,
    scanner: StopScanner,
    slot: Slot,
    request: Request,
    *,
    first: dict[str, Any] | None = None,
    last: Callable[[str], dict[str, Any]] | None = None,
    include_usage: bool,
    on_finished: Callable[[str, str, Usage], dict[str, Any] | None] | None = None,
) -> AsyncIterator[str]:
    """[Role,] content pieces, finish reason, [usage], [DONE]; stops sending text at a stop string. `first` adds
    fields to the opening chunk; `last`, given the answer as sent, fields to the chunk with the finish reason;
    `on_finished` is given the answer as sent, its finish reason and usage once the model is done (not on an error);
    the fields it returns go out on a chunk of their own before the usage one (the stored exchange's id).

    Owns the request's slot: frees it when the stream ends, fails, or is closed because the client left
    (whose cancel event has already stopped the decoding by then)."""
    done = False
    sent: list[str] = []

    def closing() -> dict[str, Any]:
        return last("".join(sent)) if last is not None else {}

    try:
        async with cancel_on_disconnect(request, slot.control):
            opening = maker.first(**(first or {}))
            if opening is not None:
                yield opening
            async for piece in iterate_in_threadpool(deltas):
                if scanner.stopped:
                    continue  # drain the rest: the usage counts are final only once the engine is done
                text = scanner.feed(piece)
                if text:
                    sent.append(text)
                    yield maker.text(text)
                if scanner.stopped:
                    yield maker.finish("stop", **closing())
        done = True
        if summary.finish_reason == "error":
            error = ErrorDetail(message="Generation failed; see the server log.", type="server_error")
            yield sse(ErrorResponse(error=error))
            yield "data: [DONE]\n\n"
            return
        reason = "stop" if scanner.stopped else summary.finish_reason
        slot.record.finished(reason, summary.prompt_tokens, summary.completion_tokens)
        if not scanner.stopped:
            tail = scanner.finish()
            if tail:
                sent.append(tail)
                yield maker.text(tail)
            yield maker.finish(summary.finish_reason, **closing())
        usage = token_usage([summary], [summary])
        extra = None if on_finished is None else await run_in_threadpool(on_finished, "".join(sent), reason, usage)
        if extra:
            yield maker(**extra)
        if include_usage:
            yield maker.usage(usage)
        yield "data: [DONE]\n\n"
    finally:
        if not done:
            # Closed early (the client left): the decoding thread stops at its next step; count what it made.
            slot.record.finished("abort", summary.prompt_tokens, slot.control.steps)
        slot.close()


async def replay(
    maker: ChatChunks | TextChunks,
    entry: Entry,
    *,
    first: dict[str, Any] | None = None,
    last: Callable[[str], dict[str, Any]] | None = None,
    include_usage: bool,
    extra: dict[str, Any] | None = None,
) -> AsyncIterator[str]:
    """A cached answer as a stream, with the chunks `sse_events` sends: [role,] the text in one piece, the finish
    reason, [extra fields], [usage], [DONE]."""
    answer = entry.answers[0]
    opening = maker.first(**(first or {}))
    if opening is not None:
        yield opening
    if answer.text:
        yield maker.text(answer.text)
    yield maker.finish(answer.finish_reason, **(last(answer.text) if last is not None else {}))
    if extra and all(v is not None for v in extra.values()):
        yield maker(**extra)
    if include_usage:
        yield maker.usage(entry.usage)
    yield "data: [DONE]\n\n"
