"""POST /v1/embeddings: the embedded all-MiniLM-L6-v2 (384-d, unit length), loaded on the first request.

One request embeds at a time, in a line of its own (`serve.max_waiting` long, 429 past it), so a burst of embedding
requests waits there instead of tying up the threads that generation runs in."""

from __future__ import annotations

import base64
import threading
import time
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from hangjia.app.admission import Admission
from hangjia.app.schemas import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from hangjia.core.errors import HangjiaError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_INPUTS = 2048  # OpenAI's limit on inputs per request

router = APIRouter(prefix="/v1", tags=["openai"])


class Embedder:
    """Loads the model once, on first use (most servers never embed), and embeds one batch at a time."""

    def __init__(self) -> None:
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """(unit-length vectors, tokens read)."""
        with self._lock:
            if self._model is None:
                from hangjia.llm.models import load_embedder

                self._model = load_embedder()
            model = self._model
            vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=32)
            tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"])
        return vectors.astype("float32"), tokens


def get_embedder(request: Request) -> Embedder:
    return request.app.state.embedder


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, embedder: EmbedderDep, request: Request) -> EmbeddingList:
    if body.model != EMBEDDING_MODEL:
        raise HangjiaError(
            f"Unknown embedding model '{body.model}'; this server has: {EMBEDDING_MODEL}.", status_code=404
        )
    if body.dimensions is not None and body.dimensions != DIMENSIONS:
        raise HangjiaError(
            f"{EMBEDDING_MODEL} gives {DIMENSIONS}-dimensional vectors; omit dimensions or ask for {DIMENSIONS}."
        )
    texts = body.texts
    if len(texts) > MAX_INPUTS:
        raise HangjiaError(f"At most {MAX_INPUTS} inputs per request (got {len(texts)}); split them.")
    admission: Admission = request.app.state.embedding_admission
    await admission.enter()  # QueueFull: 429 with Retry-After, as for generation
    started = time.monotonic()
    try:
        vectors, tokens = await run_in_threadpool(embedder.embed, texts)
    finally:
        admission.leave(held_s=time.monotonic() - started)
    if body.encoding_format == "base64":
        # Little-endian float32 bytes, as OpenAI sends them and its client decodes them.
        data = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        data = [v.tolist() for v in vectors]
    return EmbeddingList(
        data=[Embedding(index=i, embedding=e) for i, e in enumerate(data)],
        model=EMBEDDING_MODEL,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
