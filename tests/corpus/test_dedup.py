"""Dedup on planted duplicates; MinHash estimates and LSH parameters against brute force."""

from __future__ import annotations

import random

import numpy as np
import pytest

from hangjia.corpus.dedup import ALL_PAIRS_BELOW, choose_kept, decontaminate, dedup_documents, find_duplicates
from hangjia.corpus.documents import load_documents
from hangjia.corpus.minhash import (
    SHINGLE_SIZE,
    lsh_candidates,
    ngram_hashes,
    optimal_bands,
    signatures,
    token_hashes,
    tokens,
)
from tests.paths import KESTREL_DOCS

WORDS = [f"w{i}" for i in range(3000)]
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]


def words(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def shingle_set(text: str) -> set[tuple[str, ...]]:
    t = tokens(text)
    return {tuple(t[i : i + SHINGLE_SIZE]) for i in range(max(len(t) - SHINGLE_SIZE + 1, 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / len(x | y)


def groups(clusters, kind: str) -> list[set[str]]:
    return [set(c.members) for c in clusters if c.kind == kind]


def test_exact_duplicates_ignore_case_whitespace_and_punctuation():
    items = [
        ("a", "The drain pump is blocked.\nClean the filter!"),
        ("b", "the  DRAIN pump is blocked clean   the filter"),
        ("c", "The drain pump is fine."),
    ]
    clusters = find_duplicates(items)
    assert groups(clusters, "exact") == [{"a", "b"}]
    assert clusters[0].similarity == 1.0


def test_near_duplicates_found_at_5_percent_edits_not_at_50():
    rng = random.Random(0)
    base = words(rng, 400)
    # A revision-like edit: one passage of 20 words (5%) rewritten.
    small = base[:200] + words(rng, 20) + base[220:]
    # Half the words replaced, scattered.
    large = [rng.choice(WORDS) if i % 2 else w for i, w in enumerate(base)]
    items = [("base", " ".join(base)), ("small", " ".join(small)), ("large", " ".join(large))]
    assert jaccard(items[0][1], items[1][1]) > 0.85 and jaccard(items[0][1], items[2][1]) < 0.1
    near = groups(find_duplicates(items), "near")
    assert near == [{"base", "small"}]


def test_large_inputs_go_through_lsh_bands():
    rng = random.Random(6)
    texts = [" ".join(words(rng, 60)) for _ in range(ALL_PAIRS_BELOW + 100)]
    texts.append(texts[7].rsplit(" ", 1)[0] + " changed")  # J = 55/57 with the original
    near = [c for c in find_duplicates([(str(i), t) for i, t in enumerate(texts)]) if c.kind == "near"]
    assert [set(c.members) for c in near] == [{"7", str(len(texts) - 1)}]
    assert near[0].similarity == pytest.approx(55 / 57, abs=1e-4)


def test_chinese_near_duplicate_found_and_different_text_not():
    rng = random.Random(1)
    base = "".join(rng.choice(HANZI) for _ in range(300))
    edited = base[:150] + "".join(rng.choice(HANZI) for _ in range(8)) + base[158:]
    other = "".join(rng.choice(HANZI) for _ in range(300))
    assert tokens(base)[:3] == list(base[:3])  # one token per character
    near = groups(find_duplicates([("zh1", base), ("zh2", edited), ("zh3", other)]), "near")
    assert near == [{"zh1", "zh2"}]


def test_kestrel_revisions_cluster_and_keep_revision_b():
    docs, _ = load_documents(KESTREL_DOCS)
    kept, clusters = dedup_documents(docs)
    a, b = "dw4500_installation_manual_revA.md", "dw4500_installation_manual_revB.md"
    (cluster,) = [c for c in clusters if a in c.members]
    assert cluster.kind == "near" and set(cluster.members) == {a, b}
    assert cluster.kept == b and cluster.reason == "revision B > A"
    assert b in {d.source for d in kept} and a not in {d.source for d in kept}
    assert len(kept) == len(docs) - 1


def test_newest_falls_back_to_text_dates_then_modification_time():
    texts = ["Issued May 2023.", "Issued 2024-02-15.", "Issued February 2024."]
    assert choose_kept(["notes_v1.md", "notes_v2.md", "notes.md"], texts, {}) == ("notes_v2.md", "version 2 > 1")
    kept, reason = choose_kept(["x.md", "y.md", "z.md"], texts, {})
    assert (kept, reason) == ("y.md", "latest date in text 2024-02-15 > 2024-02")
    kept, reason = choose_kept(["x.md", "y.md"], ["same", "same"], {"x.md": 2e9, "y.md": 1e9})
    assert kept == "x.md" and reason.startswith("last modified")
    assert choose_kept(["x.md", "y.md"], ["2024年3月", "2023年12月"], {})[0] == "x.md"


def test_signature_estimates_match_brute_force_jaccard():
    rng = random.Random(2)
    estimates, truths = [], []
    for k in range(24):
        base = words(rng, rng.randint(60, 200))
        keep = rng.random()
        other = [w if rng.random() < keep else rng.choice(WORDS) for w in base]
        a, b = " ".join(base), " ".join(other)
        if k % 3 == 0:  # mixed English and Chinese
            a, b = a + " " + "".join(HANZI[:40]), b + " " + "".join(HANZI[10:50])
        sigs = signatures([a, b], num_perm=128, seed=k)
        estimates.append(float((sigs[0] == sigs[1]).mean()))
        truths.append(jaccard(a, b))
    error = np.array(estimates) - np.array(truths)
    assert np.abs(error).max() <= 0.1
    assert abs(error.mean()) < 0.03  # unbiased
    assert max(truths) > 0.6 and min(truths) < 0.1  # the cases cover the range


def test_vectorised_tokens_match_reference_tokeniser():
    rng = random.Random(5)
    # Full-width forms, ligatures, "ß", combining accents, Hangul jamo, CJK punctuation, anything.
    blocks = [(0x20, 0x250), (0x300, 0x370), (0x1100, 0x1200), (0x3000, 0x3190), (0xFB00, 0xFB50), (0xFF00, 0xFFF0)]
    blocks += [(0x4E00, 0x4E80), (0x2000, 0x2400), (0, 0x30000)]
    texts = ["Ｆｕｌｌ-width ÄBC_def, Straße ﬁne cafe\u0301 漢字かなカナ mixed中文text 42!", "", "“quoted” — dash… end"]
    for _ in range(400):
        cps = [rng.randrange(*rng.choice(blocks)) for _ in range(rng.randint(0, 40))]
        texts.append("".join(chr(c) + " " * (rng.random() < 0.2) for c in cps if not 0xD800 <= c < 0xE000))
    hashes, offsets = token_hashes(texts)
    assert np.diff(offsets).tolist() == [len(tokens(t)) for t in texts]
    seen: dict[str, int] = {}  # same token ⇔ same hash
    for token, h in zip([tok for t in texts for tok in tokens(t)], hashes.tolist(), strict=True):
        assert seen.setdefault(token, h) == h
    assert len(set(seen.values())) == len(seen)
    grams, text = ngram_hashes(hashes, offsets, 2, whole_short=False)
    assert len(grams) == sum(max(len(tokens(t)) - 1, 0) for t in texts)


def _brute_force_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    integrate = pytest.importorskip("scipy.integrate").quad
    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = integrate(lambda s, b=b, r=r: 1 - (1 - s**r) ** b, 0.0, threshold)[0]
            fn = integrate(lambda s, b=b, r=r: (1 - s**r) ** b, threshold, 1.0)[0]
            if 0.5 * fp + 0.5 * fn < best_error:
                best, best_error = (b, r), 0.5 * fp + 0.5 * fn
    return best


@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [16, 64, 128])
def test_lsh_bands_match_brute_force_minimisation(threshold, num_perm):
    assert optimal_bands(threshold, num_perm) == _brute_force_bands(threshold, num_perm)


def test_lsh_candidates_pair_equal_bands_and_skip_empty_texts():
    rng = random.Random(3)
    base = " ".join(words(rng, 100))
    sigs = signatures([base, " ".join(words(rng, 100)), base + " w1", "", "!!"])
    assert optimal_bands(0.8, 128) == (9, 13)  # datasketch's choice for the defaults
    assert lsh_candidates(sigs, 9, 13) == {(0, 2)}


def test_semantic_duplicates_with_real_embedder():
    from hangjia.llm.models import load_embedder

    model = load_embedder()
    items = [
        ("q1", "How do I reset the dishwasher after an E24 error?"),
        ("q2", "What is the way to reset the dishwasher following an E24 error?"),
        ("q3", "The heat pump needs an annual service by a certified technician."),
    ]
    clusters = find_duplicates(items, embed=lambda xs: model.encode(xs, normalize_embeddings=True))
    assert groups(clusters, "semantic") == [{"q1", "q2"}]
    assert clusters[0].similarity >= 0.95


def test_decontaminate_flags_13_gram_overlap_not_12():
    rng = random.Random(4)
    question = words(rng, 20)
    train = [
        " ".join(words(rng, 50) + question[3:16] + words(rng, 50)),  # 13 shared words
        " ".join(words(rng, 50) + question[3:15] + words(rng, 50)),  # 12 shared words
        " ".join(words(rng, 100)),
    ]
    assert decontaminate(train, [" ".join(question)]) == [0]
    assert decontaminate(train, [" ".join(question)], n=12) == [0, 1]
    # An eval text shorter than n is matched whole.
    assert decontaminate(train, [" ".join(question[3:12])]) == [0, 1]
    assert decontaminate(["数据" * 20], ["这是一个测试" + "数据" * 7]) == [0]
