"""POST /v1/embeddings with the official client: all-MiniLM-L6-v2, 384-d, unit length, deterministic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from hangjia.app.server import create_app
from hangjia.core.config import ServeConfig
from hangjia.llm.generation import Engine
from tests.app.conftest import live_server

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def url(tiny_model_dir) -> Iterator[str]:
    with live_server(Engine(tiny_model_dir)) as base_url:
        yield base_url


def test_embeddings_are_384_d_unit_vectors_and_the_same_text_gives_the_same_vector(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    texts = ["Error E24 means the drain is blocked.", "The warranty covers two years."]
    reply = client.embeddings.create(model=MODEL, input=texts)  # the client asks for base64 and decodes it
    assert reply.model == MODEL and [d.index for d in reply.data] == [0, 1]
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens
    again = client.embeddings.create(model=MODEL, input=texts[0], encoding_format="float")
    assert np.allclose(again.data[0].embedding, vectors[0], atol=1e-6)
    assert float(vectors[0] @ vectors[1]) < 0.9  # different texts, different vectors


def test_embedding_errors_are_clear(url):
    def post(**body) -> httpx.Response:
        return httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": "hi", **body}, timeout=60)

    assert post(model="text-embedding-3-small").status_code == 404
    assert "384" in post(dimensions=256).json()["error"]["message"]
    assert "at least one" in post(input=[]).json()["error"]["message"]


def test_embedding_requests_wait_in_their_own_line_and_get_429_past_it(tiny_model_dir):
    """With the one embedding slot taken and no queue, a request is refused at once (429, Retry-After); generation
    is not in that line, and once the slot is free the request is answered."""
    app = create_app(Engine(tiny_model_dir), ServeConfig(max_waiting=0, max_new_tokens=2, cache_size=0))
    line = app.state.embedding_admission
    with TestClient(app) as client:
        asyncio.run(line.enter())  # a free slot is taken without waiting: as if another request were embedding
        refused = client.post("/v1/embeddings", json={"model": MODEL, "input": "E24"})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
        chat = {"model": "base", "messages": [{"role": "user", "content": "E24?"}], "max_tokens": 2}
        assert client.post("/v1/chat/completions", json=chat).status_code == 200
        line.leave()
        assert client.post("/v1/embeddings", json={"model": MODEL, "input": "E24"}).status_code == 200
        assert (line.running, line.waiting) == (0, 0)
