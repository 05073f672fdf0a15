"""Request and response bodies of the OpenAI chat API, plus Hangjia's `rag` switch and `citations`.

Requests ignore unknown fields: OpenAI clients send many (`user`, `seed`, `logprobs`, ...) that a
small local server has no use for, and rejecting them would break those clients.
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


class ChatCompletionRequest(_Request):
    model: str
    """`base`, or `domain` when a trained adapter is served (see GET /v1/models)."""
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    """OpenAI's default is 1.0 (sampling); 0 is greedy and deterministic."""
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    """Older name of max_completion_tokens; the newer one wins when both are given."""
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    """Up to 4 strings; the answer is cut before the first one that appears."""
    rag: bool | None = None
    """Hangjia extension: put retrieved passages in front of the question (default: on for `domain`
    when the workspace has an index)."""

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError(f"only n=1 is supported (got {n}); send separate requests for several answers")
        return n

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


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    """Tokens the model generated, including any it produced after a stop string."""
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


Citations = list[dict[str, Any]]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    citations: Citations | None = Field(None, exclude_if=_is_none)
    """Hangjia extension, present when RAG was used: the passages put in front of the question."""


class Delta(BaseModel):
    role: Literal["assistant"] | None = Field(None, exclude_if=_is_none)
    content: str | None = Field(None, exclude_if=_is_none)


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = Field(None, exclude_if=_is_none)
    citations: Citations | None = Field(None, exclude_if=_is_none)
    """Sent on the first chunk only, when RAG was used."""


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "hangjia"


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
