"""Retrieval-aware training examples (RAFT, Zhang et al. 2024): each question with the passages a search returns.

At inference the model reads retrieved passages, some of them off-topic. RAFT trains on that situation: the
question comes with distractors (the top hits that are not its own chunk) and, in a share p_gold of examples, the
gold chunk at a random position; the answer then cites the passage it came from ("drain pump blocked [2]").
Without the gold chunk the answer is the system prompt's abstention, so the model learns to say it does not
know instead of guessing from a passage that does not hold the answer. Those passages are near misses: the
question's own top hits without the answer, from its own document too (the next rows of the same table, the
other error codes), because that is what a question the documents do not answer retrieves at inference — a
passage about the right thing that lacks the asked-for value. The user turn is exactly the one
`prompts.with_context` builds at inference.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from hangjia.core.grounding import is_grounded
from hangjia.core.prompts import abstention, with_context
from hangjia.core.words import normalize
from hangjia.corpus.chunk import Chunk
from hangjia.instruct.synth import QAPair

Search = Callable[[str, int], list[Chunk]]


def holds_answer(answer: str, text: str) -> bool:
    """Whether a passage states the answer: grounded in it, or containing it after normalisation."""
    return is_grounded(answer, text) or f" {normalize(answer)} " in f" {normalize(text)} "


def _distractors(
    pair: QAPair, gold: Chunk, search: Search, pool: Sequence[Chunk], n: int, rng: random.Random
) -> list[Chunk]:
    """n passages that are not the gold chunk: top hits from other documents (a neighbouring chunk of the same
    document often repeats the answer in its overlap), then random chunks of other documents (a tiny corpus or a
    rare code gives few hits), then same-document hits, then hits that hold the answer."""

    def usable(c: Chunk) -> bool:
        return c.id != gold.id and c.text.strip() != gold.text.strip()

    hits = [c for c in search(pair.question, 3 * n + 5) if usable(c)]
    ranked = sorted(hits, key=lambda c: (holds_answer(pair.answer, c.text), c.source == gold.source))  # stable
    picked = [c for c in ranked if c.source != gold.source and not holds_answer(pair.answer, c.text)][:n]
    tries = 4 * n if pool else 0
    while len(picked) < n and tries:
        tries -= 1
        c = rng.choice(pool)
        if usable(c) and c.source != gold.source and c not in picked and not holds_answer(pair.answer, c.text):
            picked.append(c)
    return picked + [c for c in ranked if c not in picked][: n - len(picked)]


def _near_misses(pair: QAPair, gold: Chunk, search: Search, n: int) -> list[Chunk]:
    """The question's best n hits that are not the gold chunk and do not hold the answer, from any document
    (its own first, as the search ranks them): what a question the documents do not answer retrieves."""
    hits = search(pair.question, 3 * n + 5)
    return [
        c
        for c in hits
        if c.id != gold.id and c.text.strip() != gold.text.strip() and not holds_answer(pair.answer, c.text)
    ][:n]


def raft_examples(
    pairs: Sequence[QAPair],
    chunks_by_id: Mapping[str, Chunk],
    search: Search,
    *,
    distractors: int = 2,
    p_gold: float = 0.8,
    seed: int = 0,
) -> tuple[list[QAPair], Counter]:
    """One example per pair whose chunk is in chunks_by_id (all chunks: it also supplies random distractors when
    the search finds too few).

    With probability p_gold the gold chunk sits at a random position and the answer cites it ("... [2]"); a
    two-hop question's support chunks (its first hop) take distractors' places and are cited too ("... [1][3]");
    otherwise the answer is the abstention in the question's language ("I don't know", "我不知道"), unless a
    distractor holds the answer, which then counts as the gold.
    Returns the examples and the count of dropped pairs by reason.
    """
    if not 0 <= p_gold <= 1 or distractors < 1:
        raise ValueError(f"need 0 <= p_gold <= 1 and distractors >= 1, got {p_gold} and {distractors}")
    drops: Counter = Counter()
    examples: list[QAPair] = []
    pool = list(chunks_by_id.values())
    for pair in pairs:
        gold = chunks_by_id.get(pair.chunk_id)
        if gold is None:
            drops["no_gold_chunk"] += 1
            continue
        rng = random.Random(f"{seed}:{pair.chunk_id}:{pair.question}")  # per pair: independent of the others
        fill = random.Random(f"{seed}:fill:{pair.chunk_id}:{pair.question}")
        with_gold = rng.random() < p_gold
        passages = _distractors(pair, gold, search, pool, distractors, fill)
        if not with_gold:
            passages = _near_misses(pair, gold, search, distractors) or passages
        if not passages:
            drops["no_distractors"] += 1
            continue
        cited: list[int] = []
        if with_gold:
            # A two-hop question needs its first hop too: its chunk takes a distractor's place.
            support = [chunks_by_id[i] for i in pair.support if i in chunks_by_id and i != gold.id]
            passages = [c for c in passages if c.id not in pair.support][: max(len(passages) - len(support), 0)]
            for chunk in [gold, *support]:
                passages.insert(rng.randrange(len(passages) + 1), chunk)
            cited = sorted(passages.index(c) for c in [gold, *support])
        else:
            cited = [i for i, c in enumerate(passages) if holds_answer(pair.answer, c.text)][:1]
        if not cited:
            answer, kind = abstention(pair.question), "raft_abstain"  # what the system prompt asks for
        else:
            answer, kind = f"{pair.answer} {''.join(f'[{i + 1}]' for i in cited)}", "raft_gold"
        prompt = with_context(pair.question, passages)
        examples.append(
            QAPair(pair.question, answer, kind, pair.chunk_id, pair.source, generator="raft", prompt=prompt)
        )
    return examples, drops
