"""recall@k and MRR on a small BM25 index whose chunks' sources are known, and on the Kestrel sample."""

from __future__ import annotations

import pytest

from hangjia.corpus.chunk import Chunk, chunk_documents
from hangjia.corpus.documents import load_documents
from hangjia.corpus.index import BM25Index
from hangjia.eval.qa import Question, load_questions
from hangjia.eval.retrieval import recall_at_k, source_matches
from tests.paths import KESTREL


def chunk(i: int, text: str, source: str) -> Chunk:
    return Chunk(id=f"{i:016x}", source=source, section="", start=0, end=len(text), text=text)


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(
        [
            chunk(0, "Error E24 means the drain pump is blocked.", "a.md"),
            chunk(1, "Drain pump KP-2210 costs 38.50 EUR.", "b.md"),
            chunk(2, "The warranty lasts 24 months.", "sub/c.md"),
            chunk(3, "Glycol concentration must be 30 percent.", "other/d.md"),
        ]
    )


QUESTIONS = [
    Question("q1", "What does E24 mean?", "drain pump blocked", "lookup", source=["docs/a.md"]),
    Question("q2", "What does the drain pump cost?", "38.50 EUR", "numeric", source=["docs/b.md"]),
    # a.md ("drain pump ... blocked") outranks b.md, the listed source: a hit at 3, not at 1.
    Question("q3", "drain pump blocked", "KP-2210", "lookup", source=["b.md"]),
    # Only sub/c.md mentions the warranty; "other/c.md" shares its file name but not its folder.
    Question("q4", "How long is the warranty?", "24 months", "multi_hop", source=["docs/other/c.md"]),
    Question("q5", "Who is the CEO?", "unanswerable", "unanswerable"),  # no source: skipped
    Question("q6", "What is the fax number for E24 repairs?", "unanswerable", "unanswerable", source=["a.md"]),
]


def test_source_matches_on_path_tail_or_file_name():
    assert source_matches("faq.md", "docs/faq.md")
    assert source_matches("sub/faq.md", "faq.md")
    assert source_matches("sub/faq.md", "docs/sub/faq.md")
    assert source_matches("archive.zip/inner/x.txt", "x.txt")
    assert not source_matches("sub/faq.md", "docs/other/faq.md")
    assert not source_matches("faq.md", "docs/faq.txt")
    assert not source_matches("faq.md", "")


def test_recall_and_mrr_on_known_ranks(index):
    result = recall_at_k(index, QUESTIONS, ks=(5, 1, 3))
    assert result["ks"] == [1, 3, 5] and result["skipped"] == 1
    assert [(r["id"], r["rank"]) for r in result["per_question"]] == [
        ("q1", 1),
        ("q2", 1),
        ("q3", 2),
        ("q4", None),
        ("q6", 1),
    ]
    assert result["overall"] == {"n": 5, "recall@1": 0.6, "recall@3": 0.8, "recall@5": 0.8, "mrr": 0.7}
    assert result["by_type"]["lookup"] == {"n": 2, "recall@1": 0.5, "recall@3": 1.0, "recall@5": 1.0, "mrr": 0.75}
    assert result["by_type"]["multi_hop"]["recall@5"] == 0.0
    assert set(result["by_type"]) == {"lookup", "numeric", "multi_hop", "unanswerable"}


def test_dict_questions_and_empty_input(index):
    rows = [{"id": "x", "question": "What does E24 mean?", "type": "lookup", "source": ["docs/a.md"]}]
    assert recall_at_k(index, rows, ks=(1,))["overall"] == {"n": 1, "recall@1": 1.0, "mrr": 1.0}
    empty = recall_at_k(index, [Question("q", "E24?", "x", "unanswerable")])
    assert empty["overall"]["n"] == 0 and empty["overall"]["recall@1"] is None and empty["skipped"] == 1
    with pytest.raises(ValueError):
        recall_at_k(index, QUESTIONS, ks=(0, 3))


def test_kestrel_recall_at_3_agrees_with_a_direct_count():
    docs, _ = load_documents(KESTREL / "docs")
    kestrel = BM25Index.build(chunk_documents(docs))
    questions = load_questions(KESTREL / "questions.jsonl")
    result = recall_at_k(kestrel, questions, ks=(1, 3, 5))
    lookup = [q for q in questions if q.type == "lookup"]
    direct = sum(
        any(h.chunk.source in {s.removeprefix("docs/") for s in q.source} for h in kestrel.search(q.question, k=3))
        for q in lookup
    )
    assert result["by_type"]["lookup"]["recall@3"] == round(direct / len(lookup), 4)
    assert result["overall"]["n"] == len(questions)  # every Kestrel question, unanswerable ones too, has a source
    overall = result["overall"]
    assert overall["recall@1"] <= overall["recall@3"] <= overall["recall@5"]
    assert overall["recall@1"] <= overall["mrr"] <= overall["recall@5"]
