"""LLM-free question-answer pairs from documents: run every extractive generator, keep grounded, deduplicated pairs.

The generators are in `extractive.py`, the grounding check in `grounding.py`; both are re-exported here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields

from hangjia.core.grounding import MAX_ANSWER_WORDS, is_grounded, numbers, tokens, word_count
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.documents import Document
from hangjia.instruct.extractive import GENERATORS


@dataclass
class QAPair:
    """One training example: a question with its answer and the chunk it came from.

    `generator` names what made it (extractive, self_qa, self_instruct, kg, raft, paraphrase, general);
    `kind` is the finer type within it. `prompt` is the whole user turn when it is more than the question
    (a retrieval-aware example carries its context passages there); empty otherwise.
    """

    question: str
    answer: str
    kind: str
    chunk_id: str
    source: str
    generator: str = "extractive"
    prompt: str = ""
    support: list[str] = field(default_factory=list)
    """Other chunks the answer needs besides `chunk_id` (the first hop of a two-hop question): retrieval-aware
    examples show them with the gold passage."""

    def user_turn(self) -> str:
        return self.prompt or self.question

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QAPair:
        return cls(**{k: d[k] for k in (f.name for f in fields(cls)) if k in d})


def _norm(text: str) -> str:
    return " ".join(tokens(text))


def extract_pairs(docs: list[Document], chunks: list[Chunk], max_per_chunk: int = 12) -> list[QAPair]:
    """All grounded pairs, deduplicated, at most max_per_chunk per chunk, in document order."""
    by_source: dict[str, list[Chunk]] = defaultdict(list)
    for chunk in sorted(chunks, key=lambda c: (c.source, c.start, c.end)):
        by_source[chunk.source].append(chunk)
    candidates: list[QAPair] = []
    for doc in docs:
        for generate in GENERATORS.values():
            for chunk, kind, question, answer in generate(doc, by_source[doc.source]):
                question, answer = " ".join(question.split()), " ".join(answer.split()).strip(" ,;:")
                if answer and word_count(answer) <= MAX_ANSWER_WORDS and is_grounded(answer, chunk.text):
                    candidates.append(QAPair(question, answer, kind, chunk.id, chunk.source))
    # A question whose answers disagree on a number (e.g. 1,000 mm in a superseded revision, 900 mm in the
    # current one) cannot be trusted: drop it. Answers that only differ in wording keep the first.
    answers: dict[str, set[frozenset[str]]] = defaultdict(set)
    for pair in candidates:
        answers[_norm(pair.question)].add(frozenset(numbers(pair.answer)))
    seen: set[str] = set()
    per_chunk: dict[str, list[QAPair]] = defaultdict(list)
    for pair in candidates:
        key = _norm(pair.question)
        if key not in seen and len(answers[key]) == 1:
            seen.add(key)
            per_chunk[pair.chunk_id].append(pair)
    # Cap per chunk, taking kinds in turn so one dense table cannot crowd out the chunk's other facts.
    kept: set[int] = set()
    for pairs in per_chunk.values():
        queues: dict[str, list[QAPair]] = defaultdict(list)
        for pair in pairs:
            queues[pair.kind].append(pair)
        picked: list[QAPair] = []
        while len(picked) < min(max_per_chunk, len(pairs)):
            picked.extend(q.pop(0) for q in queues.values() if q)
        kept.update(id(p) for p in picked[:max_per_chunk])
    return [p for p in candidates if id(p) in kept]
