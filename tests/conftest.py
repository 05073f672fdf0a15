"""Shared fixtures: tiny random Llama models (seconds, not minutes) and paths to the sample domain."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import KESTREL_DOCS
from tests.tiny_models import build_tiny_model, build_tiny_smollm


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    corpus = [p.read_text(encoding="utf-8") for p in sorted(KESTREL_DOCS.iterdir())]
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"), corpus)


@pytest.fixture(scope="session")
def tiny_smollm_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer, which the GGUF writer and llama.cpp know."""
    return build_tiny_smollm(tmp_path_factory.mktemp("tiny-smollm"))
