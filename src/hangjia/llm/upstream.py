"""The openai-upstream backend: prompt texts continued by any OpenAI-compatible server (vLLM, llama-server, another
Hangjia) through its `/v1/completions`.

The engine has already applied the system prompt, retrieval and the chat template, so the upstream sees the raw
prompt text and only decodes; the guard, citations and metrics stay in this Hangjia. Every call streams from the
upstream (`stream_options.include_usage` for the token counts), so a cancelled request closes its connection at the
next chunk, which frees the upstream's slot too; a non-streamed call reads the same stream to its end. Several texts
go as concurrent requests (up to `parallel` at once), which every upstream batches alike; list prompts are not
served alike everywhere (another Hangjia streams one prompt only).

Stop strings go to the upstream, which cuts its text before them. A chat answer (`trim`) is matched without its
leading whitespace, as the other backends match it, so a stop string that itself starts with whitespace could match
the upstream's raw text too early; those few are matched here on the trimmed answer instead, and the stream closed.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from hangjia.core.errors import HangjiaError
from hangjia.llm.backend import Completion, Control, GenerationParams, cut_character

log = logging.getLogger(__name__)

_FINISH = {"length": "length", "abort": "abort", "error": "error"}  # anything else the upstream says ends as "stop"


class UpstreamBackend:
    """One upstream model (`model`, as the upstream names it) behind the base URL `url` (ending in /v1)."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        parallel: int = 16,
        timeout: float = 600.0,
        max_retries: int = 2,
    ):
        import openai

        self.url = url.rstrip("/")
        self.model = model
        self.parallel = parallel
        self.timeout = timeout
        # Without a key no Authorization header is sent at all (the client insists on some key, so it gets a dummy).
        self._headers: dict[str, Any] = {} if api_key else {"Authorization": openai.Omit()}
        self._client = openai.OpenAI(
            base_url=self.url,
            api_key=api_key or "unused",
            timeout=openai.Timeout(timeout, connect=5.0),
            max_retries=max_retries,  # connection errors, 408, 429 and 5xx, with backoff
        )
        self._steps = threading.Lock()  # rows of one request count their steps on one Control

    # --- the Backend interface -------------------------------------------------------------------------------------

    def generate_texts(
        self, texts: list[str], params: GenerationParams, control: Control | None = None, *, trim: bool = False
    ) -> list[Completion]:
        # A seed per row (seed, seed + 1, ...) as the llama.cpp backend: the same request gives the same answers,
        # and n > 1 different ones.
        rows = [params if params.seed is None else replace(params, seed=params.seed + i) for i in range(len(texts))]
        if len(texts) == 1:
            return [self._complete(texts[0], rows[0], control, trim, threading.Event())]
        failed = threading.Event()  # one row failed: the others stop at their next chunk
        with ThreadPoolExecutor(min(self.parallel, len(texts)), thread_name_prefix="upstream") as pool:
            futures = [
                pool.submit(self._complete, t, p, control, trim, failed) for t, p in zip(texts, rows, strict=True)
            ]
            try:
                return [f.result() for f in futures]
            except BaseException:
                failed.set()
                raise

    def stream_text(
        self, text: str, params: GenerationParams, control: Control | None = None, *, trim: bool = False
    ) -> tuple[Iterator[str], Completion]:
        stream = self._open(text, params, trim)  # here, so a refused request is an error before any response
        summary = Completion("", 0, 0, "stop")
        pieces: queue.Queue[str | None] = queue.Queue()

        def run() -> None:
            # Reads on whether or not anyone takes the pieces, like a decoding thread, so a cancel always closes it.
            try:
                self._read(stream, summary, params, control, trim, threading.Event(), pieces.put)
            except Exception as err:
                summary.finish_reason = "error"
                log.warning("%s", err)
            finally:
                pieces.put(None)

        thread = threading.Thread(target=run, name=f"upstream {self.model}", daemon=True)
        thread.start()

        def deltas() -> Iterator[str]:
            while (piece := pieces.get()) is not None:
                yield piece
            thread.join()

        return deltas(), summary

    def close(self) -> None:
        self._client.close()

    # --- one request -----------------------------------------------------------------------------------------------

    def _complete(
        self, text: str, params: GenerationParams, control: Control | None, trim: bool, failed: threading.Event
    ) -> Completion:
        completion = Completion("", 0, 0, "stop")
        self._read(self._open(text, params, trim), completion, params, control, trim, failed, lambda piece: None)
        return completion

    def _open(self, text: str, params: GenerationParams, trim: bool):
        """Send one prompt; the upstream's stream of completion chunks (an HTTP error is raised as a HangjiaError)."""
        import openai

        kwargs: dict[str, Any] = {}
        stop = [s for s in params.stop if s and not _matched_here(s, trim)]
        if stop:
            kwargs["stop"] = stop
        if params.seed is not None:
            kwargs["seed"] = params.seed
        try:
            return self._client.completions.create(
                model=self.model,
                prompt=text,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=self._headers,
                **kwargs,
            )
        except openai.APIError as err:
            raise self._error(err) from err

    def _read(
        self,
        stream,
        out: Completion,
        params: GenerationParams,
        control: Control | None,
        trim: bool,
        failed: threading.Event,
        emit: Callable[[str], None],
    ) -> None:
        """Read `stream` into `out` (text, counts, finish reason), passing each text piece to `emit` as it comes:
        without the answer's leading whitespace when `trim`, a character split over chunks once it is whole."""
        import openai

        here = [s for s in params.stop if s and _matched_here(s, trim)]
        longest = max((len(s) for s in here), default=0)
        held = ""  # leading whitespace (trim) or a piece ending in a split character, not sent yet
        searched = 0  # out.text before this is known to hold no stop string matched here
        chunks = 0
        finish = usage = None
        try:
            for chunk in stream:  # text chunks, one with the finish reason, one with the usage, then [DONE]
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:  # one prompt, so one choice
                    finish = choice.finish_reason or finish
                    if choice.text or choice.finish_reason is None:
                        chunks += 1
                        self._step(control)
                    held += choice.text or ""
                    if trim and not out.text:
                        held = held.lstrip()
                    if held and not held.endswith("\ufffd"):
                        out.text += held
                        emit(held)
                        held = ""
                if finish is not None:
                    continue  # the upstream is done: read on to its usage
                if here and any(s in out.text[max(0, searched - longest + 1) :] for s in here):
                    finish = "stop"
                elif failed.is_set() or (control is not None and control.cancel.is_set()):
                    finish = "abort"
                searched = len(out.text)
                if finish is not None:
                    break
        except openai.APIError as err:  # the upstream failed mid-answer (an error event, a dropped connection)
            raise self._error(err) from err
        finally:
            stream.close()  # a cancelled request stops decoding upstream too
        out.finish_reason = _FINISH.get(finish or "stop", "stop")
        if out.finish_reason in ("length", "abort"):
            held = cut_character(held)
        if held:
            out.text += held
            emit(held)
        if trim:
            out.text = out.text.strip()
        out.prompt_tokens = usage.prompt_tokens if usage is not None else 0
        out.completion_tokens = usage.completion_tokens if usage is not None else chunks

    def _step(self, control: Control | None) -> None:
        if control is None:
            return
        with self._steps:
            control.steps += 1
            if control.on_step is not None:
                control.on_step()

    def _error(self, err: Exception) -> HangjiaError:
        """One sentence for what went wrong upstream: a refused request stays a 400 with the upstream's reason."""
        import openai

        where = f"The upstream at {self.url} (model '{self.model}')"
        if isinstance(err, openai.APIStatusError):
            reason = _reason(err)
            status = err.status_code
            if status in (400, 413, 422):
                return HangjiaError(f"{where} refused the request: {reason}.", status_code=400)
            if status in (401, 403):
                hint = "check the API key in the environment variable serve.upstream_api_key_env names"
            elif status == 404:
                hint = "check that serve.upstream_models maps to a model it serves (GET /v1/models there)"
            elif status == 429:
                hint = "it is busy; retry, or lower serve.parallel"
            else:
                hint = "check its log"
            return HangjiaError(f"{where} answered HTTP {status} ({reason}); {hint}.", status_code=502)
        if isinstance(err, openai.APITimeoutError):
            return HangjiaError(
                f"{where} did not answer within {self.timeout:g} s; check that it is running and not overloaded.",
                status_code=504,
            )
        if isinstance(err, openai.APIConnectionError):
            cause = f" ({err.__cause__})" if err.__cause__ is not None else ""
            return HangjiaError(
                f"{where} cannot be reached{cause}; check serve.upstream_url and that the server is running.",
                status_code=502,
            )
        return HangjiaError(f"{where} failed mid-answer: {err}; check its log.", status_code=502)


def _matched_here(stop: str, trim: bool) -> bool:
    """Whether a stop string is matched here, on the trimmed answer, rather than by the upstream on its raw text."""
    return trim and stop[:1].isspace()


def _reason(err) -> str:
    """The upstream's own message from an error body ({"message": ...} or OpenAI's {"error": {"message": ...}})."""
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message).rstrip(".")
    return err.message
