"""Self-QA (Zhang et al. 2023): a teacher turns unlabelled passages into grounded question-answer pairs.

Step 1, knowledge-guided instruction generation: the teacher reads a chunk and writes questions about it that make
sense without it. Step 2, machine reading comprehension: the teacher answers each question from the chunk, briefly.
Step 3, filtering: an answer is kept only if it is short and grounded in the chunk (`is_grounded`), the same bar
the extractive pairs meet, so a teacher's invention never becomes training data. Every drop is counted by reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from hangjia.core.grounding import MAX_ANSWER_WORDS, is_grounded, tokens, word_count
from hangjia.corpus.chunk import Chunk
from hangjia.instruct.synth import QAPair
from hangjia.llm.teacher import Messages, Teacher

QUESTION_SYSTEM = "You write exam questions about technical documents."
ANSWER_SYSTEM = "You answer questions from a passage, briefly and only with what the passage says."

# A list marker: "1.", "2)", "-", "*", "•", "Q:", "Q1:", "Question 2:".
_MARKER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*•]|q\s*\d*\s*[:.)]|question\s*\d*\s*[:.)])\s*", re.IGNORECASE)
_ANSWER_LINE = re.compile(r"^\s*(?:a\s*\d*|answer\s*\d*)\s*[:.)]\s*", re.IGNORECASE)
_INLINE_ANSWER = re.compile(r"\s(?:A|Answer)\s*\d*\s*:")  # "Q: What is E24? A: A blocked pump."
_REFERS_TO_TEXT = re.compile(r"\b(?:the|this|that|above|given)\s+(?:passage|text|excerpt|document|article)\b", re.I)
_ABSTAINS = re.compile(r"\bi don'?t know\b|\bdoes not (?:say|mention|state)\b|\bnot (?:mentioned|stated)\b", re.I)
_COPY_WORDS = 8  # a question of 8+ words found word for word in the passage is a copied sentence


def questions_prompt(chunk: Chunk, n: int) -> Messages:
    user = (
        f"Passage from {chunk.source}:\n\n{chunk.text.strip()}\n\n"
        f"Write {n} different questions that this passage answers. Each question must make sense on its own, "
        "to someone who has not seen the passage: name the product, part or topic instead of saying "
        '"the passage" or "it". Write one question per line, numbered 1., 2., 3.'
    )
    return [{"role": "system", "content": QUESTION_SYSTEM}, {"role": "user", "content": user}]


def answer_prompt(chunk: Chunk, question: str) -> Messages:
    user = (
        f"Passage from {chunk.source}:\n\n{chunk.text.strip()}\n\nQuestion: {question}\n\n"
        "Answer in one short sentence, using the passage's own words and numbers. "
        'If the passage does not say, answer "I don\'t know".'
    )
    return [{"role": "system", "content": ANSWER_SYSTEM}, {"role": "user", "content": user}]


def parse_questions(reply: str) -> list[str]:
    """Questions from a numbered or bulleted list, "Q:" lines (skipping their "A:" lines) or lines ending in "?"."""
    questions = []
    for line in reply.splitlines():
        if not line.strip() or _ANSWER_LINE.match(line):
            continue
        marked = _MARKER.match(line)
        text = _INLINE_ANSWER.split(line[marked.end() if marked else 0 :], maxsplit=1)[0]
        text = " ".join(text.split()).strip("*_ ")
        if text.endswith("?") or (marked and text and not text.endswith(":")):
            questions.append(text)
    return questions


def parse_answer(reply: str) -> str:
    """The reply without an "A:"/"Answer:" label, on one line."""
    return " ".join(_ANSWER_LINE.sub("", reply.strip(), count=1).split()).strip("*_ ")


def copies_passage(question: str, passage: str) -> bool:
    words = tokens(question)
    return len(words) >= _COPY_WORDS and f" {' '.join(words)} " in f" {' '.join(tokens(passage))} "


def self_qa(
    chunks: Sequence[Chunk],
    teacher: Teacher,
    *,
    questions_per_chunk: int = 3,
    max_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
) -> tuple[list[QAPair], Counter]:
    """Grounded pairs from the teacher's questions and answers, and the number of drops per reason."""
    drops: Counter = Counter()
    replies = teacher.complete(
        [questions_prompt(c, questions_per_chunk) for c in chunks],
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
    )
    seen: set[str] = set()
    asked: list[tuple[Chunk, str]] = []
    for chunk, reply in zip(chunks, replies, strict=True):
        if reply is None:
            drops["request failed"] += 1
            continue
        questions = parse_questions(reply)[:questions_per_chunk]
        if not questions:
            drops["unparseable"] += 1
        for question in questions:
            key = " ".join(tokens(question))
            if key in seen:
                drops["duplicate question"] += 1
            elif _REFERS_TO_TEXT.search(question):
                drops["question refers to the passage"] += 1
            elif copies_passage(question, chunk.text):
                drops["question copies the passage"] += 1
            else:
                seen.add(key)
                asked.append((chunk, question))
    # Greedy answers: reading comprehension wants the passage's words, not a varied rewording.
    answers = teacher.complete(
        [answer_prompt(c, q) for c, q in asked], max_tokens=max_tokens, temperature=0.0, seed=seed
    )
    pairs = []
    for (chunk, question), reply in zip(asked, answers, strict=True):
        answer = parse_answer(reply) if reply is not None else ""
        if reply is None:
            drops["request failed"] += 1
        elif not answer:
            drops["unparseable"] += 1
        elif _ABSTAINS.search(answer):
            drops["teacher abstained"] += 1
        elif word_count(answer) > MAX_ANSWER_WORDS:
            drops["too long"] += 1
        elif not is_grounded(answer, chunk.text):
            drops["not grounded"] += 1
        else:
            pairs.append(QAPair(question, answer, "self_qa", chunk.id, chunk.source, generator="self_qa"))
    return pairs, drops
