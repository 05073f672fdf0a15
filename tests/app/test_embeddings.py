"""POST /v1/embeddings with the official client: all-MiniLM-L6-v2, 384-d, unit length, deterministic."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

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
