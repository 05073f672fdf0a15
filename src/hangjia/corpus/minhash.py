"""MinHash signatures and LSH banding, vectorised in numpy over whole batches of texts.

text → tokens → shingles (n consecutive tokens) → 64-bit hashes → per permutation the minimum of
(a*x + b) mod p → bands of rows hashed into buckets. A token is a run of letters and digits, except
that each Chinese or Japanese character is a token by itself, so a 5-token shingle is five words of
English and five characters of Chinese (mixed text mixes). datasketch does the same work one text at
a time in Python; here every step is one numpy pass over a batch of ~256K characters (benchmarks/dedup.py).
"""

from __future__ import annotations

import itertools
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from functools import cache

import numpy as np

from hangjia.core.words import HAN_KANA_RANGES

# One token per character of Han (incl. extension A and B+), Hiragana, Katakana, CJK compatibility ideographs.
# Korean is left out on purpose: it separates words with spaces, so word shingles suit it.
_TOKEN = re.compile(rf"(?=[{HAN_KANA_RANGES}])[^\W_]|[^\W_{HAN_KANA_RANGES}]+")

MERSENNE_61 = np.uint64((1 << 61) - 1)
EMPTY = np.uint64(np.iinfo(np.uint64).max)  # signature value of a text without tokens
_SEPARATOR, _WORD, _CJK = 0, 1, 2
_BATCH_CHARS = 1 << 18  # characters per batch: ~256K (about 300 documents) keeps temporaries ~15 MB
_CHUNK = 4096  # shingles per permutation pass: 128 perms × 4096 × 8 bytes = 4 MB per buffer
_U64 = np.uint64
_BASE = 0x100000001B3  # odd multiplier of the per-token polynomial hash (the FNV-1 64-bit prime)
SHINGLE_SIZE = 5  # tokens per shingle: 5 words, or 5 CJK characters


def normalise(text: str) -> str:
    """NFKC (full-width → ASCII, ligatures split) and casefold."""
    return unicodedata.normalize("NFKC", text).casefold()


def tokens(text: str) -> list[str]:
    """Reference tokeniser: what `token_hashes` hashes, one Python string per token."""
    return _TOKEN.findall(normalise(text))


@cache
def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every code point: the one code point `normalise` makes of it, that one's class (separator,
    word or CJK character), and whether only `normalise` on the whole text gets it right: marks and
    Hangul jamo that compose with a neighbour, and letters that expand ("ß" → "ss", "ﬁ" → "fi").
    Built once per process in ~0.7 s; it lets `token_hashes` skip Python's NFKC for almost every text."""
    size = sys.maxunicode + 1
    to = np.arange(size, dtype=np.uint32)
    slow = np.zeros(size, bool)
    # Planes 4-13 are unassigned and 15-16 private use: normalise leaves them alone.
    for c in itertools.chain(range(0x40000), range(0xE0000, 0xE1000)):
        ch = chr(c)
        norm = normalise(ch)
        if _composes(ch) or (len(norm) == 1 and _composes(norm)):
            slow[c] = True
        elif len(norm) == 1:
            to[c] = ord(norm)
        elif not any(x.isalnum() for x in norm):
            to[c] = ord(" ")  # "…" → "...": a separator either way
        else:
            slow[c] = True
    alnum = np.fromiter((chr(c).isalnum() for c in range(size)), bool, size)
    cls = np.where(alnum, _WORD, _SEPARATOR).astype(np.uint8)
    for lo, hi in re.findall(r"(.)-(.)", HAN_KANA_RANGES):
        block = np.arange(ord(lo), ord(hi) + 1)
        cls[block[alnum[block]]] = _CJK
    return to, cls[to], slow


def _composes(ch: str) -> bool:
    c = ord(ch)
    jamo = 0x1100 <= c <= 0x11FF or 0xA960 <= c <= 0xA97F or 0xD7B0 <= c <= 0xD7FF
    return jamo or unicodedata.combining(ch) != 0 or unicodedata.category(ch).startswith("M")


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place: spreads every input bit over all 64 output bits."""
    z ^= z >> _U64(30)
    z *= _U64(0xBF58476D1CE4E5B9)
    z ^= z >> _U64(27)
    z *= _U64(0x94D049BB133111EB)
    z ^= z >> _U64(31)
    return z


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 … base**(n-1) modulo 2**64."""
    out = np.full(max(n, 1), base, dtype=_U64)
    out[0] = 1
    return np.cumprod(out, dtype=_U64)  # wraps modulo 2**64, which is what we want


def _multipliers(n: int) -> np.ndarray:
    """n fixed odd 64-bit constants: window position k is weighted by the k-th."""
    return np.random.default_rng(0x5EED).integers(0, 1 << 63, n, dtype=_U64) * _U64(2) + _U64(1)


def text_batches(texts: Sequence[str], max_chars: int = _BATCH_CHARS) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges of texts holding about max_chars characters each (at least one text)."""
    start, chars = 0, 0
    for i, text in enumerate(texts):
        chars += len(text)
        if chars >= max_chars:
            yield start, i + 1
            start, chars = i + 1, 0
    if start < len(texts):
        yield start, len(texts)


def _code_points(texts: list[str]) -> np.ndarray:
    joined = "\n".join(texts)  # "\n" is a separator, so no token spans two texts
    return np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def token_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the tokens of all texts; text i owns hashes[offsets[i]:offsets[i + 1]]."""
    to, classes, slow = _char_tables()
    texts = list(texts)
    cp = _code_points(texts)
    text_start = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    # Texts with combining marks (decomposed accents, Indic vowel signs), jamo or expanding letters
    # are normalised by Python first; Latin, Cyrillic, Greek and CJK text rarely has any.
    if (hard := np.flatnonzero(slow[cp])).size:
        for i in set((np.searchsorted(text_start, hard, side="right") - 1).tolist()):
            texts[i] = normalise(texts[i])
        cp = _code_points(texts)
        text_start = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    cp = to[cp]  # NFKC + casefold, one code point at a time
    cls = classes[cp]
    word, cjk = cls == _WORD, cls == _CJK
    # A token is a run of word characters or a single CJK character: [starts[k], ends[k]).
    starts = np.flatnonzero(cjk | (word & ~np.r_[False, word[:-1]]))
    ends = np.flatnonzero(cjk | (word & ~np.r_[word[1:], False])) + 1
    if starts.size == 0:
        return np.zeros(0, _U64), np.zeros(len(texts) + 1, np.int64)
    # Polynomial hash sum(cp[i] * B**(i - start)) from one prefix sum over the whole batch:
    # (prefix[end] - prefix[start]) * B**-start, all modulo 2**64 (B is odd, so invertible).
    prefix = np.zeros(cp.size + 1, _U64)
    np.cumsum(cp.astype(_U64) * _powers(_BASE, cp.size), out=prefix[1:])
    hashes = _mix((prefix[ends] - prefix[starts]) * _powers(pow(_BASE, -1, 1 << 64), int(starts[-1]) + 1)[starts])
    token_text = np.searchsorted(text_start, starts, side="right") - 1
    offsets = np.searchsorted(token_text, np.arange(len(texts) + 1))
    return hashes, offsets


def ngram_hashes(hashes: np.ndarray, offsets: np.ndarray, n: int, whole_short: bool) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every window of n tokens inside one text, and which text it is in.

    With whole_short, a text shorter than n tokens gives one window of all its tokens.
    """
    counts = np.diff(offsets)
    text = np.repeat(np.arange(counts.size), counts)
    mult = _multipliers(n)
    grams = hashes * mult[0]
    for k in range(1, n):
        same = text[k:] == text[:-k]
        grams[:-k] += np.where(same, hashes[k:] * mult[k], _U64(0))
    index = np.arange(hashes.size)
    keep = index + n <= offsets[1:][text]
    if whole_short:
        keep |= (index == offsets[:-1][text]) & (counts[text] < n)
    return _mix(grams[keep]), text[keep]


def sequence_keys(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """[n_texts, 3]: two polynomial hashes of each text's token sequence and its length.
    Equal keys mean equal normalised text (tokens joined by single spaces)."""
    counts = np.diff(offsets)
    keys = np.zeros((counts.size, 3), _U64)
    keys[:, 2] = counts
    nonempty = np.flatnonzero(counts)
    if nonempty.size:
        position = np.arange(hashes.size) - np.repeat(offsets[:-1], counts)
        for col, base in ((0, 0x9E3779B97F4A7C15), (1, 0xC2B2AE3D27D4EB4F)):
            weighted = hashes * _powers(base, int(counts.max()))[position]
            keys[nonempty, col] = np.add.reduceat(weighted, offsets[:-1][nonempty])
    return keys


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """a in [1, p) and b in [0, p) for p = 2**61 - 1, as datasketch draws them."""
    rng = np.random.default_rng(seed)
    return rng.integers(1, MERSENNE_61, num_perm, dtype=_U64), rng.integers(0, MERSENNE_61, num_perm, dtype=_U64)


def minhash(shingles: np.ndarray, text: np.ndarray, n_texts: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n_texts, num_perm] minimum over each text's shingles x of (a*x + b) mod (2**61 - 1), in chunks.

    As in datasketch, a*x + b wraps at 2**64 before the mod p. Keeping it exact (x < 2**32, a < 2**31)
    is no good: a*x then wraps p only ~4 times, the order barely depends on a, and estimates are biased.
    """
    sigs = np.full((n_texts, a.size), EMPTY, dtype=_U64)
    y = np.empty((a.size, _CHUNK), _U64)
    r = np.empty_like(y)
    col_a, col_b = a[:, None], b[:, None]
    for s in range(0, shingles.size, _CHUNK):
        m = min(_CHUNK, shingles.size - s)
        ym, rm = y[:, :m], r[:, :m]
        np.multiply(col_a, shingles[None, s : s + m], out=ym)
        ym += col_b
        # mod p without division: y ≡ (y & p) + (y >> 61) since 2**61 ≡ 1. The result can still be in
        # [p, p + 7]; folding that once more costs 2 of 8 passes and matters with probability 2**-58.
        np.bitwise_and(ym, MERSENNE_61, out=rm)
        ym >>= _U64(61)
        rm += ym
        # Layout [perm, shingle]: reduceat along the contiguous axis is ~10x faster than along axis 0.
        ts = text[s : s + m]
        first = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
        rows = ts[first]
        sigs[rows] = np.minimum(sigs[rows], np.minimum.reduceat(rm, first, axis=1).T)
    return sigs


def signatures(
    texts: Sequence[str], num_perm: int = 128, seed: int = 1, *, shingle_size: int = SHINGLE_SIZE
) -> np.ndarray:
    """MinHash signatures [len(texts), num_perm] uint64; a text without tokens gets a row of EMPTY."""
    a, b = permutations(num_perm, seed)
    out = np.empty((len(texts), num_perm), _U64)
    for start, stop in text_batches(texts):
        hashes, offsets = token_hashes(texts[start:stop])
        shingles, text = ngram_hashes(hashes, offsets, shingle_size, whole_short=True)
        out[start:stop] = minhash(shingles, text, stop - start, a, b)
    return out


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands*rows ≤ num_perm minimising the weighted false-positive area below the
    threshold plus false-negative area above it of P(candidate | s) = 1 - (1 - s**rows)**bands."""
    b, r = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]).T
    below, above = np.linspace(0.0, threshold, 2001), np.linspace(threshold, 1.0, 2001)
    hit_below = 1 - (1 - below[None, :] ** r[:, None]) ** b[:, None]
    miss_above = (1 - above[None, :] ** r[:, None]) ** b[:, None]
    error = fp_weight * np.trapezoid(hit_below, below, axis=1) + fn_weight * np.trapezoid(miss_above, above, axis=1)
    best = int(np.argmin(error))
    return int(b[best]), int(r[best])


def candidate_pairs(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[k, 2] sorted unique row pairs (i < j) that agree on all rows of at least one band."""
    live = np.flatnonzero(sigs[:, 0] != EMPTY)
    found = [np.zeros((0, 2), np.int64)]
    mult = _multipliers(rows)
    for band in range(bands):
        key = _mix((sigs[live, band * rows : (band + 1) * rows] * mult).sum(axis=1, dtype=_U64))
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        bounds = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1], True])
        sizes = np.diff(bounds)
        pair_starts = bounds[:-1][sizes == 2]  # most buckets with company hold exactly two texts
        found.append(np.stack([order[pair_starts], order[pair_starts + 1]], axis=1))
        for lo, hi in zip(bounds[:-1][sizes > 2], bounds[1:][sizes > 2], strict=True):
            i, j = np.triu_indices(hi - lo, k=1)
            found.append(np.stack([order[lo + i], order[lo + j]], axis=1))
    pairs = live[np.concatenate(found)]
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def lsh_candidates(sigs: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Row pairs (i < j) that share a bucket in at least one band; texts without tokens never match."""
    return {(int(i), int(j)) for i, j in candidate_pairs(sigs, bands, rows)}


def all_pairs(sigs: np.ndarray, min_estimate: float, block: int = 64) -> np.ndarray:
    """[k, 2] row pairs (i < j) whose signatures agree on ≥ min_estimate of their values: no LSH misses,
    n²/2 comparisons (2,000 rows × 128 perms: ~0.3 s)."""
    live = np.flatnonzero(sigs[:, 0] != EMPTY)
    sigs = sigs[live]
    need = min_estimate * sigs.shape[1] - 1e-9
    found = [np.zeros((0, 2), np.int64)]
    for i in range(0, len(sigs), block):
        agree = (sigs[i : i + block, None, :] == sigs[None, i:, :]).sum(axis=2)  # [block, n - i]
        r, c = np.nonzero(agree >= need)
        r, c = r + i, c + i
        found.append(np.stack([r[c > r], c[c > r]], axis=1))
    return live[np.concatenate(found)]


def shingle_jaccard(texts: Sequence[str], pairs: np.ndarray, shingle_size: int = SHINGLE_SIZE) -> np.ndarray:
    """True Jaccard of the shingle sets of each pair of texts, recomputing shingles ~1,000 pairs at a time."""
    return pair_jaccard(lambda rows: [texts[i] for i in rows], pairs, shingle_size)


def pair_jaccard(
    text_of: Callable[[list[int]], list[str]], pairs: np.ndarray, shingle_size: int = SHINGLE_SIZE
) -> np.ndarray:
    """`shingle_jaccard` with the texts fetched by `text_of(rows)` for ~1,000 pairs at a time (from disk, say)."""
    out = np.empty(len(pairs))
    for s in range(0, len(pairs), 1024):
        chunk = pairs[s : s + 1024]
        docs = np.unique(chunk)
        hashes, offsets = token_hashes(text_of(docs.tolist()))
        grams, text = ngram_hashes(hashes, offsets, shingle_size, whole_short=True)
        order = np.lexsort((grams, text))
        grams, text = grams[order], text[order]
        first = np.r_[True, (grams[1:] != grams[:-1]) | (text[1:] != text[:-1])]
        grams, text = grams[first], text[first]  # each text's distinct shingles, sorted
        bounds = np.searchsorted(text, np.arange(docs.size + 1))
        sets = {int(d): grams[bounds[k] : bounds[k + 1]] for k, d in enumerate(docs)}
        for k, (i, j) in enumerate(chunk.tolist()):
            both = np.intersect1d(sets[i], sets[j], assume_unique=True).size
            out[s + k] = both / max(sets[i].size + sets[j].size - both, 1)
    return out


def estimated_jaccard(sigs: np.ndarray, pairs: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Fraction of equal signature values for each row pair: an unbiased estimate of shingle Jaccard."""
    out = np.empty(len(pairs))
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        out[s : s + chunk] = (sigs[p[:, 0]] == sigs[p[:, 1]]).mean(axis=1)
    return out
