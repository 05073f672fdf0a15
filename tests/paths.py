"""Where the tests find the sample domain and the shared benchmark sets: one place for every test folder."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KESTREL = REPO / "examples" / "kestrel"
KESTREL_DOCS = KESTREL / "docs"
LANSHAN = REPO / "examples" / "lanshan"
SHARED = REPO.parent / "shared"
# The loaders' binary and non-UTF-8 documents, made by tests/corpus/fixtures/make_fixtures.py.
CORPUS_FIXTURES = REPO / "tests" / "corpus" / "fixtures"
