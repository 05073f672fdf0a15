"""Chunking: stable ids, spans that point into the document, section boundaries and size limits respected."""

from __future__ import annotations

from pathlib import Path

import pytest

from hangjia.data.chunk import Chunk, chunk_documents
from hangjia.data.documents import LOADERS, Document, load_documents

KESTREL_DOCS = Path(__file__).parents[2] / "examples/kestrel/docs"


def make_doc(source: str, text: str) -> Document:
    body, sections = LOADERS[Path(source).suffix](text.encode(), source)
    return Document(source, Path(source).suffix.lstrip("."), body, sections, "0" * 64)


@pytest.fixture(scope="module")
def kestrel() -> list[Document]:
    return load_documents(KESTREL_DOCS)[0]


def section_of(doc: Document, chunk: Chunk):
    return next(s for s in doc.sections if s.start <= chunk.start and chunk.end <= s.end)


def test_ids_are_stable_and_unique(kestrel):
    first, second = chunk_documents(kestrel), chunk_documents(kestrel)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    assert all(len(c.id) == 16 for c in first)


@pytest.mark.parametrize("max_words,overlap", [(120, 20), (40, 8), (15, 0)])
def test_spans_stay_inside_one_section_and_respect_max_words(kestrel, max_words, overlap):
    docs = {d.source: d for d in kestrel}
    chunks = chunk_documents(kestrel, max_words=max_words, overlap_words=overlap)
    for chunk in chunks:
        doc = docs[chunk.source]
        raw = doc.text[chunk.start : chunk.end]
        section = section_of(doc, chunk)  # raises StopIteration if the chunk crosses a section boundary
        assert chunk.section == section.title
        assert raw.strip() and raw == raw.rstrip()
        assert chunk.text.endswith(raw)
        assert len(raw.split()) <= max_words


def test_every_section_word_is_covered(kestrel):
    chunks = chunk_documents(kestrel)
    for doc in kestrel:
        covered = [False] * len(doc.text)
        for c in (c for c in chunks if c.source == doc.source):
            covered[c.start : c.end] = [True] * (c.end - c.start)
        for s in doc.sections:
            lines = doc.text[s.start : s.end].split("\n")
            if len(lines) == 1 and lines[0].strip() == s.title:
                continue  # a heading with nothing under it is not chunked
            span = zip(doc.text[s.start : s.end], covered[s.start : s.end], strict=True)
            missing = "".join(ch for ch, ok in span if not ok)
            missing = " ".join(missing.split()).replace(" ".join(s.title.split()), "", 1)  # title is a prefix
            assert not missing.strip(), (doc.source, s.title, missing[:80])


def test_chunk_text_carries_section_title_and_table_header():
    doc = make_doc(
        "codes.md", "# Codes\n\n" + "Code | Meaning\n" + "".join(f"E{i} | Fault number {i}\n" for i in range(10, 40))
    )
    chunks = chunk_documents([doc], max_words=40, overlap_words=0)
    assert len(chunks) > 1
    assert chunks[0].text.startswith("Codes\n")
    for chunk in chunks[1:]:
        assert chunk.text.startswith("Codes\nCode | Meaning\nE")  # later table chunks repeat the header row


def test_long_paragraph_splits_on_sentences_with_overlap():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(30)]
    doc = make_doc("long.txt", " ".join(sentences))
    chunks = chunk_documents([doc], max_words=50, overlap_words=10)
    raws = [doc.text[c.start : c.end] for c in chunks]
    assert all(r.endswith(".") for r in raws[:-1])  # cut at a sentence end
    assert all(len(r.split()) <= 50 for r in raws)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # consecutive windows overlap


def test_csv_rows_are_one_chunk_each():
    doc = make_doc("parts.csv", "part,description\nKP-1,Pump\nKP-2,Valve\nKP-3,Hose\n")
    chunks = chunk_documents([doc])
    assert [c.section for c in chunks] == ["KP-1", "KP-2", "KP-3"]
    assert chunks[1].text == "KP-2\npart: KP-2; description: Valve"


def test_round_trip_and_bad_arguments(kestrel):
    chunk = chunk_documents(kestrel)[0]
    assert Chunk.from_dict(chunk.to_dict()) == chunk
    with pytest.raises(ValueError):
        chunk_documents(kestrel, max_words=10, overlap_words=10)
