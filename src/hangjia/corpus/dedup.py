"""Find exact, near and semantic duplicates, keep the newest of each group, and flag eval overlap.

Stages, each on what the one before kept:
1. exact: same normalised text (NFKC, casefold, punctuation and whitespace runs as one separator);
2. near: MinHash over 5-token shingles (`hangjia.corpus.minhash`); candidate pairs from LSH bands (all
   signature pairs for small inputs), verified by true shingle Jaccard ≥ near_threshold (or by the
   MinHash estimate with verify="estimate"); groups by union-find;
3. semantic (when an `embed` function is given): cosine ≥ semantic_threshold, in blocks.
Each group keeps its newest member: highest revision marker in the name ("revB", "v2", a date),
else the latest date in the text ("February 2024" > "May 2023"), else the latest modification time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from hangjia.corpus.documents import Document
from hangjia.corpus.minhash import (
    EMPTY,
    SHINGLE_SIZE,
    all_pairs,
    candidate_pairs,
    estimated_jaccard,
    minhash,
    ngram_hashes,
    optimal_bands,
    pair_jaccard,
    permutations,
    sequence_keys,
    text_batches,
    token_hashes,
)

Embed = Callable[[list[str]], np.ndarray]
TextOf = Callable[[list[int]], list[str]]  # the texts of these rows (indices into the ids), in that order
SEMANTIC_THRESHOLD = 0.95
# Below this many texts compare all signature pairs (2,000 texts: ~0.3 s) instead of LSH bands, whose
# 9 bands × 13 rows at 0.8 catch a pair of Jaccard 0.82 only half the time (1 - (1 - 0.82**13)**9).
ALL_PAIRS_BELOW = 2000
_BLOCK = 1024  # rows per block of the cosine matrix: 1024 × 1024 float32 = 4 MB at a time


@dataclass
class Cluster:
    """Items that duplicate one another, and the one kept."""

    kind: str  # "exact" | "near" | "semantic"
    members: list[str]  # ids in input order
    kept: str
    reason: str  # why `kept` was chosen, e.g. "revision B > A"
    similarity: float  # lowest similarity among the pairs that joined the group (1.0 for exact)


def find_duplicates(
    items: list[tuple[str, str]],
    *,
    near_threshold: float = 0.8,
    num_perm: int = 128,
    semantic_threshold: float | None = None,
    embed: Embed | None = None,
    dates: dict[str, float] | None = None,
    keep: str = "newest",
    verify: str = "exact",
    seed: int = 1,
) -> list[Cluster]:
    """Duplicate groups among (id, text) items. The semantic stage runs when `embed` is given (cosine
    ≥ semantic_threshold, 0.95 if None). `dates` maps ids to modification times (POSIX seconds);
    `keep` is "newest" (see module docstring) or "first" (input order); `verify` checks near-duplicate
    candidates by true shingle Jaccard ("exact") or by the signature estimate ("estimate", as datasketch)."""
    ids = [i for i, _ in items]
    texts = [t for _, t in items]
    if not 0 < near_threshold <= 1 or num_perm < 1:
        raise ValueError("near_threshold must be in (0, 1] and num_perm at least 1.")
    sigs, keys = sketch(texts, num_perm, seed)
    return group_duplicates(
        ids,
        sigs,
        keys,
        lambda rows: [texts[i] for i in rows],
        near_threshold=near_threshold,
        semantic_threshold=semantic_threshold,
        embed=embed,
        dates=dates,
        keep=keep,
        verify=verify,
    )


def group_duplicates(
    ids: list[str],
    sigs: np.ndarray,
    keys: np.ndarray,
    text_of: TextOf,
    *,
    near_threshold: float = 0.8,
    semantic_threshold: float | None = None,
    embed: Embed | None = None,
    dates: dict[str, float] | None = None,
    keep: str = "newest",
    verify: str = "exact",
) -> list[Cluster]:
    """`find_duplicates` from each item's `sketch` (signature and exact key) instead of its text: `text_of(rows)`
    gives the texts of those rows only when needed (near-duplicate candidates to verify, group members to choose
    from, and the semantic stage), so the texts of a large corpus can stay on disk."""
    if len(set(ids)) != len(ids):
        raise ValueError("find_duplicates needs unique ids; two items share one.")
    if keep not in ("newest", "first"):
        raise ValueError(f"keep must be 'newest' or 'first', not {keep!r}.")
    if verify not in ("exact", "estimate"):
        raise ValueError(f"verify must be 'exact' or 'estimate', not {verify!r}.")
    if not 0 < near_threshold <= 1:
        raise ValueError("near_threshold must be in (0, 1].")
    if semantic_threshold is not None and embed is None:
        raise ValueError("semantic_threshold needs an embed function (texts → unit vectors).")
    alive = np.ones(len(ids), bool)
    clusters: list[Cluster] = []

    def add(kind: str, members: list[int], similarity: float) -> None:
        kept, reason = choose_kept([ids[i] for i in members], text_of(members), dates or {}, keep)
        clusters.append(Cluster(kind, [ids[i] for i in members], kept, reason, similarity))
        alive[[i for i in members if ids[i] != kept]] = False

    if len(ids):
        _, group = np.unique(keys, axis=0, return_inverse=True)
        order = np.argsort(group.ravel(), kind="stable")  # members of each group together, in input order
        for members in np.split(order, np.flatnonzero(np.diff(group.ravel()[order])) + 1):
            if len(members) > 1:
                add("exact", members.tolist(), 1.0)

    rows = np.flatnonzero(alive & (sigs[:, 0] != EMPTY))
    pairs, score = _near_pairs(lambda r: text_of(rows[r].tolist()), sigs[rows], near_threshold, verify)
    for members, sim in _groups(rows[pairs], score):
        add("near", members, sim)

    if embed is not None:
        rows = np.flatnonzero(alive)
        # In blocks, so only _BLOCK texts are in memory at a time; the vectors are 1.5 KB a text at 384 dims.
        blocks = [embed(text_of(rows[s : s + _BLOCK].tolist())) for s in range(0, len(rows), _BLOCK)]
        vectors = np.concatenate([np.asarray(b, dtype=np.float32) for b in blocks]) if blocks else np.zeros((0, 1))
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        pairs, sim = cosine_pairs(vectors, SEMANTIC_THRESHOLD if semantic_threshold is None else semantic_threshold)
        for members, s in _groups(rows[pairs], sim):
            add("semantic", members, s)
    return clusters


def near_pairs(
    texts: Sequence[str], sigs: np.ndarray, threshold: float = 0.8, verify: str = "exact"
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) of near-duplicate texts and their Jaccard, given the texts' MinHash signatures."""
    return _near_pairs(lambda rows: [texts[i] for i in rows], sigs, threshold, verify)


def _near_pairs(text_of: TextOf, sigs: np.ndarray, threshold: float, verify: str) -> tuple[np.ndarray, np.ndarray]:
    if len(sigs) < ALL_PAIRS_BELOW:
        # Before exact verification, keep pairs whose estimate is within 4 standard deviations of the
        # threshold: sqrt(0.8 * 0.2 / 128) = 0.035, so estimates ≥ 0.66 at the defaults.
        margin = 4 * np.sqrt(threshold * (1 - threshold) / sigs.shape[1]) if verify == "exact" else 0.0
        pairs = all_pairs(sigs, threshold - margin)
    else:
        pairs = candidate_pairs(sigs, *optimal_bands(threshold, sigs.shape[1]))
    score = pair_jaccard(text_of, pairs) if verify == "exact" else estimated_jaccard(sigs, pairs)
    return pairs[score >= threshold], score[score >= threshold]


def dedup_documents(docs: list[Document], **kw) -> tuple[list[Document], list[Cluster]]:
    """Documents left after `find_duplicates` (same keywords), in their order, and the clusters."""
    clusters = find_duplicates([(d.source, d.text) for d in docs], **kw)
    dropped = {m for c in clusters for m in c.members if m != c.kept}
    return [d for d in docs if d.source not in dropped], clusters


def decontaminate(texts: list[str], eval_texts: list[str], n: int = 13, *, short_min: int = 8) -> list[int]:
    """Indices of texts sharing an n-token window (words; characters for CJK) with an eval text.

    An eval text shorter than n tokens but at least short_min long counts as one window of its own length.
    """
    banned: dict[int, np.ndarray] = {}  # window length → sorted unique window hashes
    hashes, offsets = token_hashes(eval_texts)
    for m in {n} | {int(c) for c in np.diff(offsets) if short_min <= c < n}:
        grams, text = ngram_hashes(hashes, offsets, m, whole_short=False)
        if m < n:
            grams = grams[np.diff(offsets)[text] == m]
        banned[m] = np.unique(grams)
    hits: set[int] = set()
    for start, stop in text_batches(texts):
        hashes, offsets = token_hashes(texts[start:stop])
        for m, bad in banned.items():
            grams, text = ngram_hashes(hashes, offsets, m, whole_short=False)
            hits.update((start + text[np.isin(grams, bad)]).tolist())
    return sorted(hits)


def cosine_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) of unit vectors with cosine ≥ threshold, and their cosines, block by block."""
    found, sims = [np.zeros((0, 2), np.int64)], [np.zeros(0)]
    for i in range(0, len(vectors), _BLOCK):
        for j in range(i, len(vectors), _BLOCK):
            block = vectors[i : i + _BLOCK] @ vectors[j : j + _BLOCK].T
            if i == j:
                block = np.triu(block, k=1)
            r, c = np.nonzero(block >= threshold)
            found.append(np.stack([r + i, c + j], axis=1))
            sims.append(block[r, c].astype(np.float64))
    return np.concatenate(found), np.concatenate(sims)


def sketch(texts: Sequence[str], num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """MinHash signatures and exact-duplicate keys (two 64-bit hashes of the token sequence + its length).

    Each text's row depends on that text alone, so a corpus can be sketched batch by batch and the rows stacked."""
    a, b = permutations(num_perm, seed)
    sigs = np.empty((len(texts), num_perm), np.uint64)
    keys = np.empty((len(texts), 3), np.uint64)
    for start, stop in text_batches(texts):
        hashes, offsets = token_hashes(texts[start:stop])
        shingles, text = ngram_hashes(hashes, offsets, SHINGLE_SIZE, whole_short=True)
        sigs[start:stop] = minhash(shingles, text, stop - start, a, b)
        keys[start:stop] = sequence_keys(hashes, offsets)
    return sigs, keys


def _groups(pairs: np.ndarray, sims: np.ndarray) -> list[tuple[list[int], float]]:
    """Connected groups (union-find over pairs) as sorted member lists, with their lowest pair score."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for i, j in pairs.tolist():
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    lowest: dict[int, float] = {}
    for x in sorted(parent):
        members.setdefault(root(x), []).append(x)
    for (i, _), s in zip(pairs.tolist(), sims.tolist(), strict=True):
        lowest[root(i)] = min(lowest.get(root(i), 1.0), s)
    return [(m, round(lowest[r], 4)) for r, m in sorted(members.items(), key=lambda kv: kv[1][0])]


# Which member is newest -------------------------------------------------------------------------

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_MONTH_NAMES = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_NAME_REVISION = re.compile(r"(?<![a-z])rev(?:ision)?[ _.-]?([a-z]{1,2}|\d+)(?![a-z0-9])")
_NAME_VERSION = re.compile(r"(?<![a-z0-9])v(?:er(?:sion)?)?[ _.-]?(\d+(?:\.\d+)*)(?![a-z0-9])")
_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_.]?(0[1-9]|1[0-2])(?:[-_.]?(0[1-9]|[12]\d|3[01]))?(?!\d)")
_TEXT_DATES = [  # ISO "2024-02-15" / "2024-02", "February 2024" / "15 Feb. 2024" / "February 15, 2024", "2024年2月15日"
    re.compile(r"\b(?P<y>(?:19|20)\d\d)-(?P<m>0[1-9]|1[0-2])(?:-(?P<d>0[1-9]|[12]\d|3[01]))?\b"),
    re.compile(
        rf"\b(?:(?P<d>\d{{1,2}})\s+)?(?P<m>{_MONTH_NAMES})\b\.?\s+(?:\d{{1,2}},?\s+)?(?P<y>(?:19|20)\d\d)\b", re.I
    ),
    re.compile(r"(?P<y>(?:19|20)\d\d)\s*年\s*(?P<m>\d{1,2})\s*月(?:\s*(?P<d>\d{1,2})\s*日)?"),
]


def _revision(name: str) -> tuple[tuple[int, ...], str] | None:
    found = _NAME_REVISION.findall(name.lower())
    if not found:
        return None
    value = found[-1]
    if value.isdigit():
        return (int(value),), value
    return (sum((ord(c) - 96) * 26**k for k, c in enumerate(reversed(value))),), value.upper()


def _version(name: str) -> tuple[tuple[int, ...], str] | None:
    found = _NAME_VERSION.findall(name.lower())
    return (tuple(int(p) for p in found[-1].split(".")), found[-1]) if found else None


def _name_date(name: str) -> tuple[tuple[int, ...], str] | None:
    found = _NAME_DATE.findall(name)
    return _date_value(*found[-1]) if found else None


def _text_date(text: str) -> tuple[tuple[int, ...], str] | None:
    found = []
    for pattern in _TEXT_DATES:
        for m in pattern.finditer(text):
            month = m["m"] if m["m"].isdigit() else str(_MONTHS.index(m["m"].lower()[:3]) + 1)
            found.append(_date_value(m["y"], month, m["d"] or ""))
    return max(found, default=None)


def _date_value(year: str, month: str, day: str) -> tuple[tuple[int, ...], str]:
    value = (int(year), int(month), int(day or 0))
    return value, f"{value[0]}-{value[1]:02d}" + (f"-{value[2]:02d}" if value[2] else "")


def _modified(mtime: float | None) -> tuple[tuple[float], str] | None:
    return None if mtime is None else ((mtime,), datetime.fromtimestamp(mtime).isoformat(sep=" ", timespec="minutes"))


_CRITERIA = [  # (what the reason calls it, how to read it from (file stem, text, modification time))
    ("revision", lambda stem, text, mtime: _revision(stem)),
    ("version", lambda stem, text, mtime: _version(stem)),
    ("date in name", lambda stem, text, mtime: _name_date(stem)),
    ("latest date in text", lambda stem, text, mtime: _text_date(text)),
    ("last modified", lambda stem, text, mtime: _modified(mtime)),
]


def choose_kept(ids: list[str], texts: list[str], dates: dict[str, float], keep: str = "newest") -> tuple[str, str]:
    """The member to keep and why: the first criterion that singles out one newest member decides;
    members it cannot read rank below those it can, and ties go on to the next criterion."""
    if keep == "first":
        return ids[0], "kept the first listed (keep='first')"
    stems = [i.rsplit("/", 1)[-1].rsplit(".", 1)[0] for i in ids]
    tied = list(range(len(ids)))
    for label, read in _CRITERIA:
        values = {i: read(stems[i], texts[i], dates.get(ids[i])) for i in tied}
        known = [i for i in tied if values[i] is not None]
        if not known:
            continue
        best = max(values[i][0] for i in known)
        top = [i for i in known if values[i][0] == best]
        if len(top) == 1:
            rest = [values[i] for i in tied if i != top[0] and values[i] is not None]
            other = max(rest)[1] if rest else f"no {label} for the others"
            sep = " > " if rest else "; "
            return ids[top[0]], f"{label} {values[top[0]][1]}{sep}{other}"
        tied = top
    return ids[tied[0]], "no revision, date or modification time tells them apart; kept the first listed"
