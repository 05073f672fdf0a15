"""Request and response bodies of the OpenAI chat, completions, embeddings and models APIs, plus Hangjia's
`rag` switch, `citations` and `notes`.

Requests ignore unknown fields: OpenAI clients send many (`user`, `logit_bias`, ...) that a small local
server has no use for, and rejecting them would break those clients. Fields whose meaning we cannot honour
and a client would rely on (`echo`, `logprobs` on /v1/completions) are refused with a 400 instead.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _is_none(value: Any) -> bool:
    return value is None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    """Only text parts: the served models read no images or audio."""
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    """`developer` is OpenAI's newer name for `system` and is treated as one."""
    content: str | list[TextPart]

    def to_engine(self) -> dict[str, str]:
        """The plain {role, content} dict the engine's chat template takes."""
        role = "system" if self.role == "developer" else self.role
        text = self.content if isinstance(self.content, str) else "\n".join(p.text for p in self.content)
        return {"role": role, "content": text}


class StreamOptions(_Request):
    include_usage: bool = False
    """Send one last chunk with token usage (and no choices) before `[DONE]`."""


MAX_CHOICES = 8  # n answers are n rows of one batch; 8 keeps a CPU batch to seconds


class _GenerationRequest(_Request):
    """The sampling fields chat and text completions share."""

    model: str
    """`base`, or `domain` when a trained adapter is served (see GET /v1/models)."""
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    """OpenAI's default is 1.0 (sampling); 0 is greedy and deterministic."""
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_CHOICES)
    """Answers per prompt, sampled independently (identical when greedy)."""
    seed: int | None = None
    """Seeded sampling: the same seed and request give the same answers."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    """Up to 4 strings; the answer is cut before the first one that appears, and decoding ends there."""

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError(f"at most 4 stop strings are allowed (got {len(stop)})")
        return stop

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """Newer name of max_tokens; it wins when both are given."""
    rag: bool | None = None
    """Hangjia extension: put retrieved passages in front of the question (default: on for `domain`
    when the workspace has an index)."""
    user: str | None = None
    """Who asks (OpenAI's end-user id): stored with the exchange, and the key that keeps a user on one side of an A/B
    test."""
    guard: bool | None = None
    """Hangjia extension: the answer guard on RAG answers (default: rag.guard, on). It replies "The documents do
    not say." when the question names a code or name no document mentions, or when the answer holds a number or
    code the passages lack."""


class CompletionRequest(_GenerationRequest):
    prompt: str | list[str]
    """Raw text continued as is (no chat template), or several prompts: n choices each, in order."""
    echo: bool = False
    logprobs: int | None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and not prompt:
            raise ValueError("give at least one prompt")
        return prompt

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, echo: bool) -> bool:
        if echo:
            raise ValueError("echo is not supported; prepend the prompt yourself")
        return echo

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, logprobs: int | None) -> int | None:
        if logprobs is not None:
            raise ValueError("logprobs are not supported by this server")
        return logprobs

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    """Tokens the model generated, including any it produced after a stop string."""
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class GuardVerdict(BaseModel):
    """Hangjia extension: what the answer guard found (present when it ran: a RAG answer with the guard on)."""

    model_config = ConfigDict(use_attribute_docstrings=True)
    passed: bool
    """True when the answer stands as the model wrote it."""
    reason: str | None = None
    """Why it was blocked: `unknown_terms` (the question names a code or name no document mentions; nothing was
    generated) or `ungrounded` (the answer holds a number or code the passages lack)."""
    detail: str = ""
    """The same in words, e.g. "the documents never mention E77"."""
    reply: str | None = None
    """When blocked: what is said instead ("The documents do not say.", "文档中没有说明。"). A streamed answer has
    already been sent when the guard sees it whole: the client should show this in its place."""
    original: str | None = None
    """When blocked after generating (not streamed): the model's own answer, which the reply replaced."""


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None
    guard: GuardVerdict | None = Field(None, exclude_if=_is_none)
    """Hangjia extension: the answer guard's verdict on this answer, when it ran."""


class Citation(BaseModel):
    """Hangjia extension: one passage retrieved and put in front of the question, and where it comes from."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # the field docstrings become /openapi.json's descriptions
    index: int
    """The passage's number in the prompt; the answer cites it as `[index]`."""
    chunk_id: str
    """The chunk's stable id (as in the workspace's `chunks` dataset and index)."""
    source: str
    """The document's path under the docs folder (a zip member as `archive.zip/inner/path`)."""
    section: str
    """The title of the section the passage lies in ("page N" for a PDF page); may be empty."""
    page: int | None = None
    """The page number when the document is a PDF (its sections are its pages); null otherwise."""
    start: int
    """Where the passage starts: a character offset into the ingested document's text (`documents` dataset)."""
    end: int
    """Where the passage ends (exclusive), in the same text."""
    text: str
    """The passage as the model read it (its section title may be prefixed)."""
    score: float
    """The retrieval score that ranked it (higher is better)."""
    cited: bool | None = None
    """Whether the answer cites it with `[index]` (also `[1][2]`, `[1, 2]`, `【1】`); null on the first chunk of a
    stream, before the answer exists: the chunk with `finish_reason` repeats the citations with it filled in. With
    n > 1 answers, true when any of them cites it."""


class ChatCompletion(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    citations: list[Citation] | None = Field(None, exclude_if=_is_none)
    """Hangjia extension, present when RAG was used: the passages put in front of the question, in prompt order."""
    notes: list[str] | None = Field(None, exclude_if=_is_none)
    """Hangjia extension, present when there is something to know about the answer: e.g. that the question is in a
    language the model does not write (serve.languages)."""
    exchange_id: int | None = Field(None, exclude_if=_is_none)
    """Hangjia extension, present when the server records answers (serve.record): the stored exchange, which
    POST /v1/feedback refers to."""


class Delta(BaseModel):
    role: Literal["assistant"] | None = Field(None, exclude_if=_is_none)
    content: str | None = Field(None, exclude_if=_is_none)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(None, exclude_if=_is_none)
    citations: list[Citation] | None = Field(None, exclude_if=_is_none)
    """When RAG was used: on the first chunk (`cited` null), and again on the chunk with `finish_reason` (`cited`
    filled in from the whole answer)."""
    notes: list[str] | None = Field(None, exclude_if=_is_none)
    """On the first chunk only, as ChatCompletion.notes."""
    guard: GuardVerdict | None = Field(None, exclude_if=_is_none)
    """On the chunk with `finish_reason`, when the guard ran: its verdict on the whole answer as sent."""
    exchange_id: int | None = Field(None, exclude_if=_is_none)
    """On a chunk of its own (no choices) after the finishing one, when the server records answers: the stored
    exchange."""


class TextChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class TextCompletion(BaseModel):
    """A /v1/completions answer, and (object and all) each chunk of a streamed one."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = Field(None, exclude_if=_is_none)


class EmbeddingRequest(_Request):
    model: str
    """The embedding model's id from GET /v1/models."""
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    """`base64`: little-endian float32 bytes, what the openai client asks for by default."""
    dimensions: int | None = None

    @field_validator("input")
    @classmethod
    def _some_input(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one text to embed")
        return value

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hangjia"
    kind: str | None = Field(None, exclude_if=_is_none)
    """Hangjia extension: base model, LoRA adapter (or another adapter kind), full model, GGUF model or embedding
    model."""
    root: str | None = Field(None, exclude_if=_is_none)
    """The folder (or GGUF file) the model's own weights are loaded from (vLLM's field name)."""
    parent: str | None = Field(None, exclude_if=_is_none)
    """The model an adapter is applied to (vLLM's field name)."""
    loaded: bool | None = Field(None, exclude_if=_is_none)
    """Hangjia extension, for a named version (serve.versions): whether it is in memory now (else it loads on the next
    request for it)."""
    version: str | None = Field(None, exclude_if=_is_none)
    """Hangjia extension, for a registry alias (`domain@production`, `domain@candidate`) and for `domain` once the
    production alias is set: the version it answers with now (`domain@3`), as the responses' `model` says."""


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, which its clients turn into typed exceptions."""

    error: ErrorDetail


FeedbackKind = Literal["thumbs", "rating", "comment", "correction", "preference"]
Reason = Literal["wrong", "not_in_documents", "incomplete", "outdated", "unsafe"]


class FeedbackRequest(BaseModel):
    """A judgement of one answer (POST /v1/feedback). `kind` says which fields it needs: thumbs (`thumbs`, a `reason`
    when down), rating (`rating` 1-5), comment (`comment`), correction (`corrected_answer`: the answer as it should
    have been), preference (`chosen_exchange_id` and `rejected_exchange_id`: of two drafts shown, the one picked)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    exchange_id: int
    """The answer judged: the `exchange_id` its reply carried (for a preference, the draft shown first)."""
    kind: FeedbackKind
    thumbs: bool | None = None
    reason: Reason | None = None
    rating: int | None = Field(None, ge=1, le=5)
    comment: str | None = Field(None, max_length=10_000)
    corrected_answer: str | None = Field(None, max_length=20_000)
    chosen_exchange_id: int | None = None
    rejected_exchange_id: int | None = None
    user: str | None = None
    """Who judges (OpenAI's end-user id, as on the question)."""


class FeedbackCreated(BaseModel):
    id: int
    """The stored feedback row; it was committed before this reply was sent."""
