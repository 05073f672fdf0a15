"""Batch stages and engines: the Arrow table of documents round-trips, clean_batch and chunk_batch give what
clean_documents and chunk_documents give, and Ray Data gives the same tables as the local engine, row for row."""

from __future__ import annotations

import functools
import sys

import pytest
import ray

from hangjia.core.errors import HangjiaError
from hangjia.corpus.batch_runner import map_batches
from hangjia.corpus.batches import (
    CHUNK_SCHEMA,
    CLEANED_SCHEMA,
    DOCUMENT_SCHEMA,
    chunk_batch,
    clean_batch,
    clean_results,
    documents_table,
    table_documents,
)
from hangjia.corpus.chunk import chunk_documents
from hangjia.corpus.clean import clean_documents, repeated_lines
from hangjia.corpus.documents import Document, load_documents
from hangjia.corpus.text import assemble
from tests.paths import KESTREL_DOCS

FOOTER = "Kestrel DW4500 service manual - internal"
# The sample has no running footers and nothing the filters drop; these add one of each, so every path of the
# cleaning loop (repeated line, boilerplate, PII, filtered document) is compared.
STEPS = [  # one service step per page, each with the running footer
    "Check the drain hose for kinks before each service visit and note the pressure reading.",
    "Remove the lower spray arm, rinse its nozzles under running water and refit it firmly.",
    "Inspect the door seal for cracks and replace it when water marks show on the floor.",
    "Run an empty hot programme with descaler when the rinse aid light stays on for a week.",
]
EXTRA = [
    ("service_manual.txt", [("", "\f".join(f"{step}\n{FOOTER}" for step in STEPS))]),
    ("stub.txt", [("", "See above.")]),
    ("copyright.txt", [("", "© 2024 Kestrel Ltd. All rights reserved.")]),
    ("contact.md", [("Contact", f"Call Li Wei on 138 0013 8000 or mail li.wei@example.com.\n{FOOTER}\n{STEPS[0]}")]),
]
MAX_LEN, OVERLAP = 40, 8  # small chunks: ~360 of them, several per section


def doc_of(source: str, blocks: list[tuple[str, str]]) -> Document:
    text, sections = assemble(blocks)
    return Document(source, source.rsplit(".", 1)[1], text, sections, "ab" * 32)


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    loaded, _ = load_documents(KESTREL_DOCS)
    return loaded + [doc_of(source, blocks) for source, blocks in EXTRA]


@pytest.fixture(scope="module")
def reference(docs):
    """What the list-based stages give: (kept, filtered, report, chunks)."""
    kept, filtered, report = clean_documents(docs)
    return kept, filtered, report, chunk_documents(kept, MAX_LEN, OVERLAP)


def clean_fn(docs: list[Document]):
    return functools.partial(clean_batch, repeated=frozenset(repeated_lines(docs)))


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance on this machine for the module; map_batches uses it as it finds it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_documents_table_round_trip(docs):
    table = documents_table(docs)
    assert table.schema == DOCUMENT_SCHEMA and table.num_rows == len(docs)
    assert table_documents(table) == docs
    empty = documents_table([])
    assert empty.schema == DOCUMENT_SCHEMA and table_documents(empty) == []


@pytest.mark.parametrize("batch_size", [3, 64])
def test_clean_batch_matches_clean_documents(docs, reference, batch_size):
    kept, filtered, report, _ = reference
    assert report.header_footer_lines and report.boilerplate_lines and report.pii and filtered  # all paths taken
    cleaned = map_batches(documents_table(docs), clean_fn(docs), batch_size=batch_size)
    assert cleaned.schema == CLEANED_SCHEMA and cleaned.num_rows == len(docs)
    got_kept, got_filtered, got_report = clean_results(cleaned)
    assert got_kept.schema == DOCUMENT_SCHEMA
    assert table_documents(got_kept) == kept  # texts and section spans
    assert got_filtered == filtered == [("stub.txt", "too short"), ("copyright.txt", "no text left")]
    assert got_report.to_dict() == report.to_dict()


def test_chunk_batch_matches_chunk_documents(reference):
    kept, _, _, chunks = reference
    got = map_batches(documents_table(kept), functools.partial(chunk_batch, max_len=MAX_LEN, overlap=OVERLAP))
    assert got.schema == CHUNK_SCHEMA
    assert got.to_pylist() == [c.to_dict() for c in chunks]


def test_empty_table_gives_the_output_schema_and_bad_arguments_are_refused(docs):
    empty = documents_table([])
    for engine in ("local", "ray"):  # no rows: no batches, so Ray is not started
        assert map_batches(empty, clean_fn(docs), engine=engine).schema == CLEANED_SCHEMA
        assert map_batches(empty, functools.partial(chunk_batch, max_len=10, overlap=2), engine=engine).num_rows == 0
    with pytest.raises(HangjiaError, match="Unknown data engine 'spark'"):
        map_batches(empty, clean_fn(docs), engine="spark")
    with pytest.raises(HangjiaError, match="at least 1"):
        map_batches(documents_table(docs), clean_fn(docs), batch_size=0)


def test_ray_engine_without_ray_says_how_to_install_it(docs, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(HangjiaError, match=r"pip install 'ray\[data\]'"):
        map_batches(documents_table(docs[:1]), clean_fn(docs), engine="ray")


def test_ray_engine_gives_the_local_tables(docs, reference, local_ray):
    # Batches of 3 documents: 6 clean tasks over 16 documents and 4 chunk tasks over the 14 kept ones.
    table = documents_table(docs)
    local = map_batches(table, clean_fn(docs), batch_size=3)
    on_ray = map_batches(table, clean_fn(docs), engine="ray", batch_size=3)
    assert on_ray.schema == local.schema == CLEANED_SCHEMA
    assert on_ray.equals(local)
    kept = clean_results(on_ray)[0]
    chunk = functools.partial(chunk_batch, max_len=MAX_LEN, overlap=OVERLAP)
    local_chunks = map_batches(kept, chunk, batch_size=4)
    ray_chunks = map_batches(kept, chunk, engine="ray", batch_size=4)
    assert ray_chunks.schema == CHUNK_SCHEMA and ray_chunks.equals(local_chunks)
    assert ray_chunks.to_pylist() == [c.to_dict() for c in reference[3]]
