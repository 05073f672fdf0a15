"""OpenAI-compatible routes: GET /v1/models, POST /v1/chat/completions and POST /v1/completions (plain and
SSE streaming).

Generation blocks for seconds on a CPU, so every engine call runs in the threadpool and the event loop stays
free for /health, /metrics and other clients. Each generating request holds a slot of the admission queue
(429 when it is full) from before its first token until its last, and a `Control` whose cancel event is set
when its client goes away, so an abandoned request stops decoding and frees its slot. A greedy request asked before
is answered from the response cache (app/cache.py) without a slot; a stream of it sends the answer as one piece.
How a streamed answer is cut at stop strings and sent as chunks is app/streaming.py.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from hangjia.app import ab
from hangjia.app.admission import Admissions, QueueFull
from hangjia.app.cache import Answer, Entry, ResponseCache
from hangjia.app.deps import AdmissionDep, CacheDep, EngineDep, MetricsDep, ServeConfigDep, StoreDep, VersionsDep
from hangjia.app.embeddings import EMBEDDING_MODEL
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.metrics import Metrics
from hangjia.app.registry import PRODUCTION
from hangjia.app.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionRequest,
    GuardVerdict,
    Model,
    ModelList,
    TextChoice,
    TextCompletion,
    Usage,
)
from hangjia.app.streaming import (
    ChatChunks,
    Slot,
    StopScanner,
    TextChunks,
    cancel_on_disconnect,
    event_stream,
    replay,
    sse_events,
    token_usage,
)
from hangjia.app.versions import Versions
from hangjia.core.citations import mark_cited
from hangjia.core.config import ServeConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import last_question
from hangjia.eval.scoring import abstains
from hangjia.llm.generation import Completion, Engine, GenerationParams
from hangjia.llm.guard import AnswerGuard
from hangjia.llm.languages import language_note, model_languages
from hangjia.llm.weights import BASE, DOMAIN, ModelWeights

router = APIRouter(prefix="/v1", tags=["openai"])
log = logging.getLogger("uvicorn.error")


def _created(path) -> int:
    return int(path.stat().st_mtime) if path is not None and path.exists() else int(time.time())


def _weights(engine: Engine, name: str) -> ModelWeights:
    """What a served name is, from the engine's own folders (the resolver's ModelWeights describes it)."""
    tuned = engine.versions[name] if name in engine.versions else {BASE: None, DOMAIN: engine.adapter_dir}[name]
    return ModelWeights(name, engine.base_dir, tuned)


@router.get("/models")
async def list_models(engine: EngineDep, versions: VersionsDep) -> ModelList:
    """The served models: what each is (base model, LoRA adapter, full model, GGUF model), its folder or file, its
    parent, and for a named version whether it is loaded now. With the model registry: each version `domain@N`, each
    alias `domain@ALIAS` with the `version` it points at now, and `domain` with its `version` once `production` is
    set."""
    await run_in_threadpool(versions.refresh)
    models = {name: _listed(engine, name) for name in engine.model_names}
    for alias, target in versions.aliases.items():
        if target in models:
            models[alias] = models[target].model_copy(update={"id": alias, "version": target})
    if (production := models.get(f"{DOMAIN}@{PRODUCTION}")) is not None:
        models[DOMAIN] = production.model_copy(update={"id": DOMAIN})
    listed = [*models.values(), Model(id=EMBEDDING_MODEL, created=_created(None), kind="embedding model")]
    return ModelList(data=listed)


def _listed(engine: Engine, name: str) -> Model:
    w = _weights(engine, name)
    parent = BASE if w.is_adapter else None
    loaded = engine.is_loaded(name) if name in engine.versions else None
    return Model(id=name, created=_created(w.folder), kind=w.kind, root=str(w.folder), parent=parent, loaded=loaded)


async def _resolved(body: ChatCompletionRequest | CompletionRequest, versions: Versions):
    """The request with its model resolved to the concrete version that answers it (app/versions.py): `domain` →
    `domain@3` once the registry's production alias is set, `domain@candidate` → its version. Responses, metrics, the
    cache and the stored exchange all name that version."""
    model = await run_in_threadpool(versions.resolve, body.model)
    return body if model == body.model else body.model_copy(update={"model": model})


async def _admit(model: str, metrics: Metrics, admissions: Admissions, versions: Versions) -> Slot:
    """A slot in `model`'s line, with `model` loaded (a named version loads on its first request)."""
    admission = admissions.of(model)
    record = metrics.request(model)
    try:
        await admission.enter()
    except QueueFull:
        record.rejected()
        raise
    except BaseException:
        record.close()
        raise
    record.admitted()
    versions.hold(model)
    slot = Slot(record, admission, versions, model)
    try:
        await run_in_threadpool(versions.load, model)
    except BaseException:
        slot.close()
        raise
    return slot


def _params(body: ChatCompletionRequest | CompletionRequest, max_tokens: int) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=body.stop_list,
    )


def _notes(engine: Engine, model: str, messages: list[dict[str, str]], serve_config: ServeConfig) -> list[str] | None:
    """What the client should know about the answer before reading it: a question in a language the model does not
    write (see llm.languages)."""
    question = last_question(messages)
    languages = model_languages(engine.base_dir, serve_config.languages)
    note = language_note(question, model, engine.base_dir, languages)
    return [note] if note else None


class _Guard:
    """The answer guard for one chat request: its early verdict on the question, and the judge of each answer."""

    def __init__(self, guard: AnswerGuard, question: str, passages: list[str], metrics: Metrics, model: str):
        self.guard, self.question, self.passages = guard, question, passages
        self.metrics, self.model = metrics, model
        verdict = guard.before(question)
        self.early = None if verdict.passed else self._blocked(verdict, original=None)

    @classmethod
    def of(cls, engine: Engine, body: ChatCompletionRequest, rag: bool, messages, citations, metrics) -> _Guard | None:
        guard = engine.guard(body.guard) if rag else None
        if guard is None:
            return None
        return cls(guard, last_question(messages), [c["text"] for c in citations], metrics, body.model)

    def _blocked(self, verdict, original: str | None) -> GuardVerdict:
        self.metrics.guarded.labels(self.model, verdict.reason).inc()
        return GuardVerdict(**verdict.to_dict(), reply=self.guard.reply(self.question), original=original)

    def judge(self, answer: str) -> GuardVerdict:
        """The verdict on one answer (the early one when the question was blocked before generating)."""
        if self.early is not None:
            return self.early
        verdict = self.guard.after(self.question, answer, self.passages, abstains(answer))
        return GuardVerdict(passed=True) if verdict.passed else self._blocked(verdict, original=answer)


def _opening(citations: list[dict] | None, notes: list[str] | None) -> dict[str, Any]:
    """The first stream chunk's fields: the passages (`cited` is unknown until the answer is: null) and the notes."""
    return {"citations": None if citations is None else [{**c, "cited": None} for c in citations], "notes": notes}


def _closing(
    citations: list[dict] | None, verdict_of: Callable[[str], GuardVerdict | None]
) -> Callable[[str], dict[str, Any]] | None:
    """The finishing stream chunk's fields, given the answer as sent: the passages with `cited` filled in, and the
    guard's verdict when it ran (blocked: `reply` replaces the answer); None without RAG."""
    if citations is None:
        return None

    def fields(answer: str) -> dict[str, Any]:
        verdict = verdict_of(answer)
        if verdict is not None and not verdict.passed:
            verdict = verdict.model_copy(update={"original": None})
        return {"citations": mark_cited(citations, [answer])} | ({} if verdict is None else {"guard": verdict})

    return fields


def _check_stream(body: ChatCompletionRequest | CompletionRequest, prompts: int = 1) -> None:
    if body.stream and body.n * prompts > 1:
        raise HangjiaError("Streaming gives one answer per request; use n=1 and one prompt with stream, or stream off.")


async def _cache_key(
    cache: ResponseCache,
    engine: Engine,
    body: ChatCompletionRequest | CompletionRequest,
    params: GenerationParams,
    endpoint: str,
    rag: bool = False,
    **request: Any,
) -> str | None:
    """The response cache's key of a greedy request; None when the cache is off, the request samples, or the model's
    version cannot be told (see app/cache.py)."""
    if not cache.enabled or body.temperature != 0:
        return None
    settings = {"max_tokens": params.max_new_tokens, "stop": params.stop, "n": body.n, "seed": body.seed}
    request |= {**settings, "top_p": body.top_p}
    return await run_in_threadpool(cache.key, engine, _weights(engine, body.model), endpoint, request, rag)


class Services:
    """What answering a request uses, as one dependency: the /v1 routes and the web app's chat (app/web/) take it,
    and `answer_chat` answers with it."""

    def __init__(
        self,
        engine: EngineDep,
        serve_config: ServeConfigDep,
        metrics: MetricsDep,
        admission: AdmissionDep,
        versions: VersionsDep,
        cache: CacheDep,
        store: StoreDep,
    ):
        self.engine, self.serve_config, self.metrics, self.admission = engine, serve_config, metrics, admission
        self.versions, self.cache, self.store = versions, cache, store


ServicesDep = Annotated[Services, Depends()]


# The routes return a model or a StreamingResponse, so FastAPI cannot infer the schema: name it for /openapi.json.
_STREAMED = "; with `stream`, Server-Sent Events of its chunks (`data: {...}`), ending in `data: [DONE]`."


@router.post(
    "/chat/completions",
    response_model=None,
    responses={200: {"model": ChatCompletion, "description": "The chat completion" + _STREAMED}},
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, services: ServicesDep
) -> ChatCompletion | StreamingResponse:
    return await answer_chat(body, request, services)


async def answer_chat(
    body: ChatCompletionRequest,
    request: Request,
    services: Services,
    *,
    conversation_id: int | None = None,
    split: bool = True,
) -> ChatCompletion | StreamingResponse:
    """Answer one chat request, plain or streamed, and record it as an exchange (of `conversation_id`, a web chat's);
    `split` False keeps the request on the name it asks for even where an A/B test would send its user elsewhere."""
    engine, serve_config, metrics = services.engine, services.serve_config, services.metrics
    admission, versions, cache, store = services.admission, services.versions, services.cache, services.store
    arrived, asked = time.perf_counter(), body.model
    if split:
        body = body.model_copy(update={"model": ab.route(serve_config.ab, body.model, body.user)})  # an A/B side
    body = await _resolved(body, versions)
    engine.check_model(body.model)
    _check_stream(body)
    rag = body.rag if body.rag is not None else engine.default_rag(body.model)
    messages = [m.to_engine() for m in body.messages]
    notes = _notes(engine, body.model, messages, serve_config)
    params = _params(body, body.max_completion_tokens or body.max_tokens or serve_config.max_new_tokens)
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    guarded = rag and (engine.guard_default if body.guard is None else body.guard)
    key = await _cache_key(cache, engine, body, params, "chat", rag, messages=messages, guard=guarded)
    record = _recorder(store, asked, body, messages, arrived, conversation_id)
    if key is not None and (hit := cache.get(key, body.model)) is not None:
        metrics.cached(body.model)
        if not body.stream:
            return _chat_completion(hit, request_id, created, await run_in_threadpool(record, hit))
        first, last = _opening(hit.citations, hit.notes), _closing(hit.citations, lambda _: hit.answers[0].guard)
        maker = ChatChunks(request_id, created, body.model)
        extra = {"exchange_id": await run_in_threadpool(record, hit)}
        return event_stream(replay(maker, hit, first=first, last=last, include_usage=body.include_usage, extra=extra))
    slot = await _admit(body.model, metrics, admission, versions)
    try:
        if rag:
            with metrics.retrieving(body.model):
                prepared, citations = await run_in_threadpool(engine.prepare, messages, rag)
        else:
            prepared, citations = engine.prepare(messages, rag)
        prompt = engine.format(prepared)
        guard = _Guard.of(engine, body, rag, messages, citations, metrics)
        kept = citations if rag else None
        if body.stream:
            # Started before the response, so a bad request (e.g. too long for the context) is still a 4xx.
            if guard is not None and guard.early is not None:
                deltas, summary = iter([guard.early.reply]), Completion(guard.early.reply, 0, 0, "stop")
            else:
                deltas, summary = await run_in_threadpool(
                    engine.stream_text, prompt, body.model, params, slot.control, trim=True
                )
            judge = functools.cache(guard.judge) if guard is not None else lambda _: None  # one verdict per answer

            def remember(answer: str, reason: str, usage: Usage) -> dict[str, Any]:
                entry = Entry(body.model, (Answer(answer, reason, judge(answer)),), usage, kept, notes)
                cache.put(key, entry)
                exchange_id = record(entry)
                return None if exchange_id is None else {"exchange_id": exchange_id}

            maker = ChatChunks(request_id, created, body.model)
            events = sse_events(
                maker,
                deltas,
                summary,
                StopScanner(body.stop_list),
                slot,
                request,
                first=_opening(kept, notes),
                last=_closing(kept, judge),
                include_usage=body.include_usage,
                on_finished=remember,
            )
            stream = event_stream(events)
            slot = None  # the event stream owns it now
            return stream
        if guard is not None and guard.early is not None:  # nothing to generate: the documents cannot say
            outs = [Completion(guard.early.reply, 0, 0, "stop")] * body.n
        else:
            async with cancel_on_disconnect(request, slot.control):
                outs = await run_in_threadpool(
                    engine.generate_texts, [prompt] * body.n, body.model, params, slot.control, trim=True
                )
        answers = _answers(outs, body.stop_list, judge=guard.judge if guard is not None else None)
        entry = Entry(body.model, answers, token_usage(outs[:1], outs), kept, notes)
        slot.record.finished(answers[0].finish_reason, entry.usage.prompt_tokens, entry.usage.completion_tokens)
        cache.put(key, entry)
        return _chat_completion(entry, request_id, created, await run_in_threadpool(record, entry))
    finally:
        if slot is not None:
            slot.close()


@router.post(
    "/completions",
    response_model=None,
    responses={200: {"model": TextCompletion, "description": "The text completion" + _STREAMED}},
)
async def completions(
    body: CompletionRequest, request: Request, services: ServicesDep
) -> TextCompletion | StreamingResponse:
    """Raw text continued as is: no chat template, no system prompt, no retrieval, no trimming."""
    engine, serve_config, metrics = services.engine, services.serve_config, services.metrics
    admission, versions, cache = services.admission, services.versions, services.cache
    body = await _resolved(body, versions)
    engine.check_model(body.model)
    prompts = body.prompts
    _check_stream(body, len(prompts))
    params = _params(body, body.max_tokens or serve_config.max_new_tokens)
    request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    key = await _cache_key(cache, engine, body, params, "text", prompts=prompts)
    if key is not None and (hit := cache.get(key, body.model)) is not None:
        metrics.cached(body.model)
        if not body.stream:
            return _text_completion(hit, request_id, created)
        maker = TextChunks(request_id, created, body.model)
        return event_stream(replay(maker, hit, include_usage=body.include_usage))
    slot = await _admit(body.model, metrics, admission, versions)
    try:
        if body.stream:
            deltas, summary = await run_in_threadpool(
                engine.stream_text, prompts[0], body.model, params, slot.control, trim=False
            )

            def remember(answer: str, reason: str, usage: Usage) -> None:
                cache.put(key, Entry(body.model, (Answer(answer, reason),), usage))

            maker = TextChunks(request_id, created, body.model)
            scanner = StopScanner(body.stop_list, trim=False)
            events = sse_events(
                maker, deltas, summary, scanner, slot, request, include_usage=body.include_usage, on_finished=remember
            )
            stream = event_stream(events)
            slot = None
            return stream
        rows = [p for p in prompts for _ in range(body.n)]  # OpenAI's order: prompt 0's n choices first
        async with cancel_on_disconnect(request, slot.control):
            outs = await run_in_threadpool(engine.generate_texts, rows, body.model, params, slot.control)
        entry = Entry(body.model, _answers(outs, body.stop_list, trim=False), token_usage(outs[:: body.n], outs))
        slot.record.finished(entry.answers[0].finish_reason, entry.usage.prompt_tokens, entry.usage.completion_tokens)
        cache.put(key, entry)
        return _text_completion(entry, request_id, created)
    finally:
        if slot is not None:
            slot.close()


def _finish(scanner: StopScanner, completion: Completion) -> str:
    return "stop" if scanner.stopped else completion.finish_reason


def _answers(
    outs: list[Completion], stop: list[str], trim: bool = True, judge: Callable[[str], GuardVerdict] | None = None
) -> tuple[Answer, ...]:
    """Each completion as the client gets it: cut at its first stop string, with the guard's verdict on it."""
    answers = []
    for completion in outs:
        scanner = StopScanner(stop, trim=trim)
        text = scanner.feed(completion.text) + scanner.finish()
        answers.append(Answer(text, _finish(scanner, completion), judge(text) if judge is not None else None))
    return tuple(answers)


def _recorder(
    store: ExchangeStore | None,
    asked: str,
    body: ChatCompletionRequest,
    messages: list[dict[str, str]],
    arrived: float,
    conversation_id: int | None = None,
) -> Callable[[Entry], int | None]:
    """Stores a chat answer as an exchange (run it in the threadpool); its id, or None when nothing is recorded. The
    first choice is stored as the user saw it (the guard's reply when it blocked the answer)."""

    def record(entry: Entry) -> int | None:
        if store is None:
            return None
        first = entry.answers[0]
        shown = first.guard.reply if first.guard is not None and not first.guard.passed else first.text
        try:
            return store.record(
                model=asked,
                version=body.model,
                messages=messages,
                passages=entry.citations,
                answer=shown,
                latency_ms=round((time.perf_counter() - arrived) * 1000),
                user=body.user,
                conversation_id=conversation_id,
            )
        except Exception:  # the answer is made and is sent; a database that failed costs only its record
            log.exception("Could not record the exchange; the answer goes out without an exchange_id.")
            return None

    return record


def _chat_completion(entry: Entry, request_id: str, created: int, exchange_id: int | None = None) -> ChatCompletion:
    """The response to a chat request, freshly generated or from the cache; a blocked answer shows the guard's reply."""
    choices = [
        Choice(
            index=i,
            message=AssistantMessage(content=a.guard.reply if a.guard is not None and not a.guard.passed else a.text),
            finish_reason=a.finish_reason,
            guard=a.guard,
        )
        for i, a in enumerate(entry.answers)
    ]
    cited = None if entry.citations is None else mark_cited(entry.citations, [c.message.content for c in choices])
    return ChatCompletion(
        id=request_id,
        created=created,
        model=entry.model,
        choices=choices,
        usage=entry.usage,
        citations=cited,
        notes=entry.notes,
        exchange_id=exchange_id,
    )


def _text_completion(entry: Entry, request_id: str, created: int) -> TextCompletion:
    choices = [TextChoice(index=i, text=a.text, finish_reason=a.finish_reason) for i, a in enumerate(entry.answers)]
    return TextCompletion(id=request_id, created=created, model=entry.model, choices=choices, usage=entry.usage)
