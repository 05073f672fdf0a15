"""The select stage's policy: from every synthesized pair to the train / val / test splits that teach the most.

    pairs ─► heuristics ─► dedup (exact, near, semantic) ─► quality (IFD or Nuggets) ─► diversity to the budget
          ─► derived examples of the kept pairs (paraphrases, retrieval-aware) ─► splits grouped by chunk or source
          ─► general self-distilled pairs mixed into train (the forgetting guard)

Derived examples are made after the budget is spent, so the budget counts facts, not wordings of one fact,
and every derived example lands in the split of the pair it came from (no reworded fact leaks into val).
Model-dependent parts arrive as functions, so this file stays testable without a model.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hangjia.core.config import SelectConfig
from hangjia.core.grounding import tokens, word_count
from hangjia.corpus.dedup import find_duplicates
from hangjia.instruct.forgetting_guard import mix_in
from hangjia.instruct.selectors import grouped_split, k_center_greedy
from hangjia.instruct.synth import QAPair

Embed = Callable[[list[str]], np.ndarray]
Score = Callable[[list[QAPair]], list[float]]
Derive = Callable[[list[QAPair]], tuple[list[QAPair], dict[str, Counter]]]
MIN_QUESTION_WORDS = 3


@dataclass
class Curated:
    train: list[QAPair]
    val: list[QAPair]
    test: list[QAPair]
    drops: dict[str, Counter] = field(default_factory=dict)  # step → reason → pairs dropped
    counts: dict[str, int] = field(default_factory=dict)  # pairs left after each step
    scores: dict[str, float] = field(default_factory=dict)  # question → quality score (kept and dropped)


def _text(pair: QAPair) -> str:
    return f"{pair.question}\n{pair.answer}"


def heuristics(pairs: list[QAPair]) -> tuple[list[QAPair], Counter]:
    """Drop pairs that cannot teach: an empty answer, a question under 3 words, an answer the question gives away."""
    kept, drops = [], Counter()
    for pair in pairs:
        q, a = tokens(pair.question), tokens(pair.answer)
        if not a:
            drops["empty answer"] += 1
        elif word_count(pair.question) < MIN_QUESTION_WORDS:  # a Chinese character counts as a word
            drops["question under 3 words"] += 1
        elif set(a) <= set(q):
            drops["answer given in the question"] += 1
        else:
            kept.append(pair)
    return kept, drops


def dedup(pairs: list[QAPair], cfg: SelectConfig, embed: Embed | None) -> tuple[list[QAPair], Counter]:
    """Exact, near (MinHash) and semantic duplicates of question + answer; the first of each group stays."""
    semantic = cfg.semantic_dup_threshold is not None and embed is not None
    clusters = find_duplicates(
        [(str(i), _text(p)) for i, p in enumerate(pairs)],
        near_threshold=cfg.near_dup_threshold,
        semantic_threshold=cfg.semantic_dup_threshold if semantic else None,
        embed=embed if semantic else None,
        keep="first",
    )
    dropped: set[int] = set()
    drops = Counter()
    for c in clusters:
        gone = [int(m) for m in c.members if m != c.kept]
        dropped.update(gone)
        drops[f"{c.kind} duplicate"] += len(gone)
    return [p for i, p in enumerate(pairs) if i not in dropped], drops


def by_quality(
    pairs: list[QAPair], cfg: SelectConfig, score: Score | None
) -> tuple[list[QAPair], Counter, dict[str, float]]:
    """Score, drop what the score rules out (IFD ≥ max_ifd), keep the best `quality_fraction` in input order."""
    if cfg.quality == "none" or score is None or not pairs:
        return pairs, Counter(), {}
    scores = score(pairs)
    drops = Counter()
    ok = list(range(len(pairs)))
    if cfg.quality == "ifd":
        ok = [i for i in ok if scores[i] < cfg.max_ifd]
        drops[f"IFD ≥ {cfg.max_ifd:g} (the question does not help)"] = len(pairs) - len(ok)
    keep = max(1, round(cfg.quality_fraction * len(ok))) if ok else 0
    best = sorted(ok, key=lambda i: -scores[i])[:keep]  # stable: ties keep input order
    if len(ok) > keep:
        drops[f"below the best {cfg.quality_fraction:.0%} by {cfg.quality}"] = len(ok) - keep
    chosen = sorted(best)
    return [pairs[i] for i in chosen], drops, {p.question: float(s) for p, s in zip(pairs, scores, strict=True)}


def to_budget(
    pairs: list[QAPair], cfg: SelectConfig, embed: Embed | None, scores: dict[str, float] | None = None
) -> tuple[list[QAPair], Counter]:
    """Down to `budget` pairs: K-center-greedy on embeddings (coverage), a random subset, the passages' turns
    (`round_robin_by_chunk`: as many source chunks as the budget reaches), or the best-scoring n.

    With `diversity: none` the budget goes to the highest quality scores (Cherry LLM's top-IFD pick), or to the
    first n in input order when no score was computed.
    """
    if cfg.budget is None or len(pairs) <= cfg.budget:
        return pairs, Counter()
    if cfg.diversity == "kcenter":
        if embed is None:
            raise ValueError("diversity: kcenter needs an embedder.")
        chosen = sorted(k_center_greedy(np.asarray(embed([_text(p) for p in pairs])), cfg.budget))
    elif cfg.diversity == "random":
        chosen = sorted(random.Random(cfg.seed).sample(range(len(pairs)), cfg.budget))
    elif cfg.diversity == "chunks":
        chosen = sorted(round_robin_by_chunk(pairs, cfg.budget, scores))
    elif scores:
        chosen = sorted(sorted(range(len(pairs)), key=lambda i: -scores[pairs[i].question])[: cfg.budget])
    else:
        chosen = list(range(cfg.budget))
    how = cfg.diversity if cfg.diversity != "none" else f"best {cfg.quality}" if scores else "first n"
    return [pairs[i] for i in chosen], Counter({f"over the budget ({how})": len(pairs) - cfg.budget})


def round_robin_by_chunk(pairs: list[QAPair], budget: int, scores: dict[str, float] | None = None) -> list[int]:
    """Indices of `budget` pairs taken in rounds over their source chunks: every chunk's best pair first, then
    every chunk's second best, and so on, so a fact-bearing passage goes unrepresented only once the budget is
    smaller than the number of passages. Within a chunk, and among the chunks of the round the budget ends in,
    the higher quality score goes first (without scores, input order); a pair with no chunk is a chunk of its own.
    """
    best_first = sorted(range(len(pairs)), key=lambda i: -scores[pairs[i].question]) if scores else range(len(pairs))
    taken: Counter = Counter()  # pairs of each chunk seen so far, best first
    turns = []  # (round, place in best_first, pair index)
    for place, i in enumerate(best_first):
        chunk = group_of(pairs[i], "chunk")
        turns.append((taken[chunk], place, i))
        taken[chunk] += 1
    return [i for _, _, i in sorted(turns)[:budget]]


def group_of(pair: QAPair, split_by: str) -> str:
    """The unit kept whole in one split; a pair with no chunk (self-instruct, general) is its own group."""
    key = pair.chunk_id if split_by == "chunk" else pair.source
    return key or f"question:{pair.question}"


def curate(
    pairs: list[QAPair],
    cfg: SelectConfig,
    *,
    embed: Embed | None = None,
    score: Score | None = None,
    derive: Derive | None = None,
    general: list[QAPair] = (),
) -> Curated:
    drops: dict[str, Counter] = {}
    counts = {"input": len(pairs)}
    pairs, drops["heuristics"] = heuristics(pairs)
    counts["heuristics"] = len(pairs)
    if cfg.dedup:
        pairs, drops["dedup"] = dedup(pairs, cfg, embed)
        counts["dedup"] = len(pairs)
    pairs, drops["quality"], scores = by_quality(pairs, cfg, score)
    counts["quality"] = len(pairs)
    pairs, drops["budget"] = to_budget(pairs, cfg, embed, scores)
    counts["selected"] = len(pairs)
    derived: list[QAPair] = []
    if derive is not None and pairs:
        derived, derive_drops = derive(pairs)
        drops.update(derive_drops)
    counts["derived"] = len(derived)
    rows = [{"group": group_of(p, cfg.split_by), "pair": p} for p in [*pairs, *derived]]
    splits = grouped_split(rows, key="group", fractions=cfg.splits, seed=cfg.seed)
    train, val, test = ([r["pair"] for r in split] for split in splits)
    mixed = mix_in(train, list(general), cfg.general_ratio, cfg.seed)
    counts.update(general=len(mixed) - len(train), train=len(mixed), val=len(val), test=len(test))
    return Curated(mixed, val, test, {k: +v for k, v in drops.items() if +v}, counts, scores)
