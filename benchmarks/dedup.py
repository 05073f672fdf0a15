"""Near-duplicate detection: Hangjia's vectorised MinHash against datasketch, measured in the same run.

    .venv/bin/python benchmarks/dedup.py            # 100,000 documents
    .venv/bin/python benchmarks/dedup.py --quick    # 10,000 documents

A synthetic English + Chinese corpus (fixed seed, 100–300 tokens per document) where 10% of the
documents get a planted copy with 2, 5, 10 or 30% of tokens replaced, either scattered or as one
contiguous passage. A pair counts as a true duplicate when the Jaccard of its 5-token shingle sets is
≥ the threshold, so the truth does not depend on either method. Each method runs in its own
subprocess (fair peak RSS) with threshold 0.8, 128 permutations and the same shingles:
  hangjia           signatures → LSH bands → candidates checked by true shingle Jaccard (the default)
  hangjia-estimate  the same, candidates checked by the signature estimate (what datasketch does)
  datasketch        MinHash.generator (shared permutations) → MinHashLSH → query → MinHash.jaccard
Needs `pip install 'datasketch>=1.6,<2'`.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

THRESHOLD, NUM_PERM, SEED = 0.8, 128, 1234
EDIT_RATES = (0.02, 0.05, 0.10, 0.30)
EDIT_MODES = ("scattered", "passage")
METHODS = ("hangjia", "hangjia-estimate", "datasketch")
VERIFY = {"hangjia": "exact", "hangjia-estimate": "estimate"}


# Corpus ------------------------------------------------------------------------------------------


def _vocabularies(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = set()
    while len(words) < 20_000:
        words.add("".join(rng.choice(syllables, rng.integers(1, 4))))
    hanzi = np.array([chr(c) for c in range(0x4E00, 0x4E00 + 3500)])
    return np.array(sorted(words)), hanzi


def _zipf_cdf(n: int) -> np.ndarray:
    p = np.cumsum(1.0 / (np.arange(n) + 10.0))
    return p / p[-1]


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)


def _render(ids: np.ndarray, vocab: np.ndarray, lang: str) -> str:
    """Tokens to text with sentence punctuation (which normalisation has to strip)."""
    toks = vocab[ids].tolist()
    if lang == "en":
        for i in range(0, len(toks), 12):
            toks[i] = toks[i].capitalize()
        for i in range(11, len(toks), 12):
            toks[i] += "."
        return " ".join(toks)
    for i in range(14, len(toks), 15):
        toks[i] += "，" if i % 2 else "。"
    return "".join(toks)


def build_corpus(n_docs: int, seed: int = SEED) -> tuple[list[str], list[tuple[int, int, str, float, str]]]:
    """Texts and planted pairs (original index, copy index, language, edit rate, edit mode)."""
    rng = np.random.default_rng(seed)
    vocabs = dict(zip(("en", "zh"), _vocabularies(rng), strict=True))
    cdfs = {lang: _zipf_cdf(len(v)) for lang, v in vocabs.items()}
    n_base = round(n_docs / 1.1)
    langs = rng.choice(["en", "zh"], n_base)
    token_ids = [_draw(rng, cdfs[lang], rng.integers(100, 301)) for lang in langs]
    texts = [_render(ids, vocabs[lang], lang) for ids, lang in zip(token_ids, langs, strict=True)]
    planted = []
    for k, src in enumerate(rng.choice(n_base, n_docs - n_base, replace=False).tolist()):
        lang, ids = str(langs[src]), token_ids[src].copy()
        rate, mode = EDIT_RATES[k % len(EDIT_RATES)], EDIT_MODES[(k // len(EDIT_RATES)) % len(EDIT_MODES)]
        n_edit = max(1, round(rate * len(ids)))
        if mode == "scattered":
            where = rng.choice(len(ids), n_edit, replace=False)
        else:
            start = rng.integers(0, len(ids) - n_edit + 1)
            where = np.arange(start, start + n_edit)
        ids[where] = _draw(rng, cdfs[lang], n_edit)
        planted.append((src, len(texts), lang, rate, mode))
        texts.append(_render(ids, vocabs[lang], lang))
    order = rng.permutation(len(texts))  # copies should not sit next to their originals
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    return [texts[i] for i in order], [(int(where[a]), int(where[b]), *rest) for a, b, *rest in planted]


# Methods (each runs in a fresh subprocess) ---------------------------------------------------------


def shingles(text: str) -> list[bytes]:
    """The 5-token shingles Hangjia hashes, as bytes for datasketch (a short text is one shingle)."""
    from hangjia.corpus.minhash import SHINGLE_SIZE, tokens

    t = tokens(text)
    return [" ".join(t[i : i + SHINGLE_SIZE]).encode() for i in range(max(len(t) - SHINGLE_SIZE + 1, 1))] if t else []


def run_hangjia(texts: list[str], verify: str) -> tuple[np.ndarray, dict]:
    from hangjia.corpus.dedup import near_pairs
    from hangjia.corpus.minhash import signatures

    t0 = time.perf_counter()
    sigs = signatures(texts, NUM_PERM)
    t1 = time.perf_counter()
    pairs, _ = near_pairs(texts, sigs, THRESHOLD, verify)
    t2 = time.perf_counter()
    return pairs, {"signatures_s": t1 - t0, "lsh_verify_s": t2 - t1}


def run_datasketch(texts: list[str]) -> tuple[np.ndarray, dict]:
    from datasketch import MinHash, MinHashLSH

    shingle_s = 0.0

    def timed_shingles():
        nonlocal shingle_s
        for text in texts:
            t = time.perf_counter()
            s = shingles(text)
            shingle_s += time.perf_counter() - t
            yield s

    t0 = time.perf_counter()
    minhashes = list(MinHash.generator(timed_shingles(), num_perm=NUM_PERM))
    t1 = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    with lsh.insertion_session() as session:
        for i, m in enumerate(minhashes):
            session.insert(i, m)
    found = []
    for i, m in enumerate(minhashes):
        for j in lsh.query(m):
            if j > i and m.jaccard(minhashes[j]) >= THRESHOLD:
                found.append((i, j))
    t2 = time.perf_counter()
    timings = {"shingles_s": shingle_s, "signatures_s": t1 - t0 - shingle_s, "lsh_verify_s": t2 - t1}
    return np.array(found, dtype=np.int64).reshape(-1, 2), timings


def worker(method: str, corpus: Path, out: Path) -> None:
    with open(corpus, "rb") as fh:
        texts = pickle.load(fh)
    import hangjia.corpus.dedup  # noqa: F401  (imports are not part of the measurement)

    if method == "datasketch":
        import datasketch  # noqa: F401
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    pairs, timings = run_datasketch(texts) if method == "datasketch" else run_hangjia(texts, VERIFY[method])
    seconds = time.perf_counter() - t
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    np.save(out, pairs)
    print(json.dumps({"seconds": seconds, "peak_mib": rss_peak / 1024, "added_mib": (rss_peak - rss_before) / 1024,
                      **timings}))  # fmt: skip


# Scoring -----------------------------------------------------------------------------------------


def jaccard(a: str, b: str) -> float:
    x, y = set(shingles(a)), set(shingles(b))
    return len(x & y) / len(x | y) if x | y else 1.0


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000, help="corpus size (default 100,000)")
    ap.add_argument("--quick", action="store_true", help="10,000 documents")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.corpus, args.out)
    n_docs = 10_000 if args.quick else args.docs

    t = time.perf_counter()
    texts, planted = build_corpus(n_docs)
    print(f"corpus: {len(texts):,} documents, {len(planted):,} planted pairs, built in {time.perf_counter() - t:.1f} s")
    results, found = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.pkl"
        with open(corpus, "wb") as fh:
            pickle.dump(texts, fh)
        for method in METHODS:
            out = Path(tmp) / f"{method}.npy"
            cmd = [sys.executable, __file__, "--worker", method, "--corpus", str(corpus), "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            if proc.returncode:
                sys.exit(f"{method} failed:\n{proc.stderr}")
            results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
            found[method] = {tuple(sorted(p)) for p in np.load(out).tolist()}
            print(f"  {method}: {results[method]['seconds']:.1f} s")

    # Truth: planted pairs at or above the threshold, plus any detected pair that truly is (no method is
    # penalised for finding an unplanted duplicate).
    true_j = {tuple(sorted((a, b))): jaccard(texts[a], texts[b]) for a, b, *_ in planted}
    for pairs in found.values():
        for p in pairs - true_j.keys():
            true_j[p] = jaccard(texts[p[0]], texts[p[1]])
    truth = {p for p, j in true_j.items() if j >= THRESHOLD}

    print(f"\n{len(texts):,} documents, threshold {THRESHOLD}, {NUM_PERM} permutations, {len(truth):,} true pairs")
    print("| method | docs/s | seconds | precision | recall | F1 | peak RSS MiB | RSS added MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method in METHODS:
        r, pairs = results[method], found[method]
        tp = len(pairs & truth)
        precision, recall = tp / max(len(pairs), 1), tp / max(len(truth), 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-12)
        r["f1"] = f1
        print(f"| {method} | {len(texts) / r['seconds']:,.0f} | {r['seconds']:.1f} | {precision:.3f} | {recall:.3f} "
              f"| {f1:.3f} | {r['peak_mib']:,.0f} | {r['added_mib']:,.0f} |")  # fmt: skip
    base = results["datasketch"]["seconds"]
    for method in METHODS[:2]:
        print(f"throughput ratio {method} / datasketch: {base / results[method]['seconds']:.1f}x")
    print("phases (s): " + "; ".join(
        f"{m}: " + ", ".join(f"{k[:-2]} {v:.1f}" for k, v in results[m].items() if k.endswith("_s")) for m in METHODS
    ))  # fmt: skip

    print("\nrecall by planted edit (true Jaccard mean; share of pairs truly ≥ threshold):")
    print("| edit | mean J | truly dup | " + " | ".join(METHODS) + " |")
    print("|---|---:|---:|" + "---:|" * len(METHODS))
    for mode in EDIT_MODES:
        for rate in EDIT_RATES:
            keys = [tuple(sorted((a, b))) for a, b, _, r_, m in planted if r_ == rate and m == mode]
            dup = [k for k in keys if k in truth]
            cells = [f"{sum(k in found[m] for k in dup) / max(len(dup), 1):.3f}" for m in METHODS]
            mean_j = np.mean([true_j[k] for k in keys])
            print(f"| {rate:.0%} {mode} | {mean_j:.3f} | {len(dup) / len(keys):.2f} | " + " | ".join(cells) + " |")
    import datasketch

    versions = f"Python {platform.python_version()}, numpy {np.__version__}, datasketch {datasketch.__version__}"
    print(f"\nmachine: {_cpu()}, {os.cpu_count()} cores; {versions}; {date.today()}")


if __name__ == "__main__":
    main()
