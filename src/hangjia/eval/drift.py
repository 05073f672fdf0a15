"""Drift: are the questions people ask now still the questions the model was trained on, and still about the
documents? Each signal is a test of the recent questions against a reference, with a p-value:

embedding          MMD between the two sets' question vectors (RBF kernel, bandwidth by the median heuristic); the
                   p-value comes from shuffling the pooled questions `permutations` times, so two samples of one
                   distribution (a resampled set) give a uniform p-value and are not flagged.
out_of_domain      share of recent questions whose best BM25 score over the chunks is below the reference questions'
                   `ood_percentile`-th percentile; p-value by shuffling the pooled scores (the cut re-estimated each
                   time, so a small reference's uncertain cut does not raise false alarms).
abstention,        over served exchanges (question, answer, abstained, thumbs, created_at), the rate in the newest
negative_feedback  `window_days` window against all earlier exchanges, one-sided two-proportion z-test.

Vectors: all-MiniLM-L6-v2 is English-only (its WordPiece vocabulary has single Chinese characters and no Chinese
training), so Chinese question sets are compared as hashed TF-IDF vectors of BM25's own terms instead (words;
Chinese characters and bigrams) — `drift.embedding: auto` picks them when half the questions are Chinese.

The served-exchange rows are the export format the feedback store will write; `load_exchanges` documents it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from hangjia.core.config import DriftConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import iter_jsonl
from hangjia.core.words import is_chinese
from hangjia.corpus.index import tokenize
from hangjia.corpus.retrieve import Embed
from hangjia.eval.scoring import abstains

DRIFT_EXIT = 3  # not 1: cron and Kubernetes see 1 for any crash, and 2 is a user error (HangjiaError)
MINILM = "all-MiniLM-L6-v2"
TERMS = "terms"
# Hashed term vectors: 4,096 buckets. Kestrel's 110 questions have ~600 distinct terms, so a few share a bucket,
# which only blurs the distance a little; 1,000 questions make a 32 MB matrix and a 4-GFLOP Gram product.
_TERM_BUCKETS = 2**12


# ---- inputs ------------------------------------------------------------------------------------------------------


def load_questions(path: Path) -> list[str]:
    """Questions from a JSONL file (a `question` field per row) or a plain text file (one per line)."""
    path = Path(path)
    if not path.is_file():
        raise HangjiaError(f"Questions file {path} does not exist; pass --questions with a JSONL or text file.")
    lines = path.read_text(encoding="utf-8").splitlines()
    jsonl = path.suffix in (".jsonl", ".json") or next((s.lstrip().startswith("{") for s in lines if s.strip()), False)
    if not jsonl:
        questions = [" ".join(line.split()) for line in lines if line.strip()]
    else:
        questions = []
        try:
            for row in iter_jsonl(path):
                questions.append(" ".join(str(row["question"]).split()))
        except (ValueError, KeyError, TypeError) as exc:
            raise HangjiaError(
                f"{path}: row {len(questions) + 1} is not a question record ({exc}); each line needs a 'question' "
                "field (or give a plain text file, one question per line)."
            ) from None
    questions = [q for q in questions if q]
    if not questions:
        raise HangjiaError(f"Questions file {path} has no questions.")
    return questions


@dataclass(frozen=True)
class Exchange:
    """One served question and what came of it: whether the model abstained ("the documents do not say") and the
    user's thumbs (1 up, -1 down, 0 none)."""

    question: str
    abstained: bool
    thumbs: int
    created_at: datetime


def load_exchanges(path: Path) -> list[Exchange]:
    """Served exchanges from JSONL, one per line: `question` (str), `answer` (str), `abstained` (bool; when absent,
    whether the answer abstains by eval's own check, scoring.abstains), `thumbs` (true, 1 or "up"; false, -1 or
    "down"; 0 or null for none — the feedback store's boolean column fits as it is) and `created_at` (ISO 8601, e.g.
    "2026-12-06T18:30:00Z", or Unix seconds). Times without a zone are UTC."""
    path = Path(path)
    if not path.is_file():
        raise HangjiaError(f"Exchanges file {path} does not exist; pass --exchanges with a JSONL file.")
    rows: list[Exchange] = []
    try:
        for row in iter_jsonl(path):
            abstained = row["abstained"] if "abstained" in row else abstains(str(row["answer"]))
            if abstained not in (True, False):
                raise ValueError(f"abstained {abstained!r} is not true or false")
            rows.append(
                Exchange(str(row["question"]), bool(abstained), _thumbs(row.get("thumbs")), _time(row["created_at"]))
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise HangjiaError(
            f"{path}: row {len(rows) + 1} is not an exchange ({exc}); each line needs question, answer (or "
            "abstained), thumbs and created_at (ISO 8601)."
        ) from None
    if not rows:
        raise HangjiaError(f"Exchanges file {path} has no rows.")
    return rows


def _thumbs(value: Any) -> int:
    if isinstance(value, bool):
        return 1 if value else -1
    for sign, names in ((1, (1, "up")), (-1, (-1, "down")), (0, (0, None))):
        if value in names:
            return sign
    raise ValueError(f"thumbs {value!r} is not true/false, 1/-1, 'up'/'down', 0 or null")


def _time(value: Any) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ---- the tests ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signal:
    """One drift signal: the recent value against what the reference gives, its test and verdict."""

    name: str
    value: float | None
    """Recent: the MMD, the out-of-domain share, the newest window's rate."""
    reference: float | None
    """The same measured on the reference (for the MMD: the 95th percentile of the shuffled sets' MMD)."""
    p_value: float | None
    """None when the signal was not tested (too few samples)."""
    threshold: str
    n: int
    """Recent samples the value is over."""
    drifted: bool
    note: str = ""


def best_scores(index_scores: Callable[[str], np.ndarray], questions: Sequence[str]) -> np.ndarray:
    """Each question's best BM25 score over the chunks (`index_scores` gives every chunk's; 0: no term matches)."""
    return np.array([float(np.max(index_scores(q), initial=0.0)) for q in questions])


def term_vectors(texts: Sequence[str]) -> np.ndarray:
    """Unit TF-IDF vectors of BM25's terms (English words stemmed, stop words out; Chinese characters and bigrams),
    hashed into fixed buckets by CRC32 so they do not depend on the process; idf over these texts."""
    counts = np.zeros((len(texts), _TERM_BUCKETS))
    for row, text in enumerate(texts):
        for term in tokenize(text):
            counts[row, zlib.crc32(term.encode("utf-8")) % _TERM_BUCKETS] += 1
    tf = np.log1p(counts)
    idf = np.log((1 + len(texts)) / (1 + (counts > 0).sum(axis=0))) + 1
    vectors = tf * idf
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """MMD between the samples x and y (rows), its 95th percentile over `permutations` random relabellings of the
    pooled rows, and the permutation p-value, (1 + shuffles at least as large) / (1 + permutations).

    Kernel exp(-|a-b|² / median pairwise |a-b|²) (the median heuristic, Gretton et al. 2012); the statistic is the
    square root of the biased MMD² estimate: ≥ 0, a distance between the two distributions, at most √2."""
    pooled = np.vstack([x, y]).astype(np.float64)
    sq = np.sum(pooled**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    off = d2[~np.eye(len(pooled), dtype=bool)]
    scale = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
    kernel = np.exp(-d2 / scale)
    m, n = len(x), len(y)
    labels = np.zeros((permutations + 1, m + n))
    labels[0, :m] = 1  # row 0: the observed split
    for row in range(1, permutations + 1):
        labels[row, rng.permutation(m + n)[:m]] = 1
    stats = np.empty(len(labels))
    for start in range(0, len(labels), 256):  # 256 × 1,000 × 1,000 per product at most
        a = labels[start : start + 256]
        b = 1 - a
        ka, kb = a @ kernel, b @ kernel
        xx, yy, xy = (ka * a).sum(1), (kb * b).sum(1), (ka * b).sum(1)
        stats[start : start + len(a)] = xx / m**2 + yy / n**2 - 2 * xy / (m * n)
    mmd = np.sqrt(np.maximum(stats, 0.0))
    observed, null = float(mmd[0]), mmd[1:]
    p_value = (1 + int(np.sum(null >= observed - 1e-12))) / (1 + permutations)
    return observed, float(np.percentile(null, 95)), p_value


def ood_test(
    reference: np.ndarray, recent: np.ndarray, percentile: float, permutations: int, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Out of domain by best BM25 score: the share of `recent` below the reference's `percentile` (or at 0), the
    reference's own share, that cut, and the permutation p-value — how often a random split of the pooled scores
    puts at least as large a share of its 'recent' side below its 'reference' side's percentile.

    Not a binomial test against the nominal percentile: the cut is itself estimated from the reference, and with 55
    kestrel reference questions that test flagged 8 of 100 random halves of kestrel's questions at alpha 0.01;
    shuffling re-estimates the cut each time and flagged 1 (the embedding test: 0)."""
    pooled = np.concatenate([reference, recent])
    m = len(reference)
    orders = np.vstack([np.arange(len(pooled)), *(rng.permutation(len(pooled)) for _ in range(permutations))])
    shuffled = pooled[orders]  # row 0: the observed split
    cuts = np.percentile(shuffled[:, :m], percentile, axis=1, keepdims=True)
    shares = _out_of_domain(shuffled[:, m:], cuts).mean(axis=1)
    p_value = (1 + int(np.sum(shares[1:] >= shares[0] - 1e-12))) / (1 + permutations)
    cut = float(cuts[0, 0])
    return float(shares[0]), float(np.mean(_out_of_domain(reference, cut))), cut, p_value


def rise_p_value(hits_before: int, n_before: int, hits_now: int, n_now: int) -> float:
    """One-sided two-proportion z-test (pooled variance) that the rate now is above the rate before."""
    pooled = (hits_before + hits_now) / (n_before + n_now)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (hits_now / n_now - hits_before / n_before) / math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_now))
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class Window:
    """Served exchanges from `start` to `start + window_days`."""

    start: datetime
    exchanges: int
    abstained: int
    rated: int
    """Exchanges with a thumb up or down."""
    negative: int

    @property
    def abstention_rate(self) -> float | None:
        return self.abstained / self.exchanges if self.exchanges else None

    @property
    def negative_rate(self) -> float | None:
        return self.negative / self.rated if self.rated else None


def windows(exchanges: Sequence[Exchange], days: float) -> list[Window]:
    """The exchanges in windows of `days`, oldest first; the newest window ends at the newest exchange."""
    end = max(e.created_at for e in exchanges)
    width = timedelta(days=days)
    groups: dict[int, list[Exchange]] = {}
    for e in exchanges:  # window k: (end - (k + 1) · width, end - k · width], its rows' back = k
        groups.setdefault(int((end - e.created_at) // width), []).append(e)
    out = []
    for back in range(max(groups), -1, -1):
        rows = groups.get(back, [])
        out.append(
            Window(
                start=end - (back + 1) * width,
                exchanges=len(rows),
                abstained=sum(e.abstained for e in rows),
                rated=sum(e.thumbs != 0 for e in rows),
                negative=sum(e.thumbs < 0 for e in rows),
            )
        )
    return out


def _rising(name: str, now: tuple[int, int], before: tuple[int, int], alpha: float, min_samples: int) -> Signal:
    """Signal for a rate (hits, n) in the newest window against all earlier ones."""
    (hits, n), (hits0, n0) = now, before
    value, reference = (hits / n if n else None), (hits0 / n0 if n0 else None)
    threshold = f"p < {alpha:g}"
    if n < min_samples or n0 < min_samples:
        note = f"too few to test ({n} in the newest window, {n0} before; need {min_samples} each)"
        return Signal(name, value, reference, None, threshold, n, False, note)
    p = rise_p_value(hits0, n0, hits, n)
    return Signal(name, value, reference, p, threshold, n, p < alpha, "newest window vs all earlier exchanges")


# ---- the report --------------------------------------------------------------------------------------------------


@dataclass
class DriftReport:
    signals: list[Signal]
    representation: str
    """What the embedding test compared: all-MiniLM-L6-v2 or terms (hashed TF-IDF)."""
    reference_count: int
    recent_count: int
    reference_scores: np.ndarray
    recent_scores: np.ndarray
    ood_threshold: float
    reference_points: np.ndarray
    """The embedding test's reference vectors projected on their first two principal components."""
    recent_points: np.ndarray
    windows: list[Window] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.signals)

    @property
    def exit_code(self) -> int:
        return DRIFT_EXIT if self.drifted else 0

    def signal(self, name: str) -> Signal:
        return next(s for s in self.signals if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "representation": self.representation,
            "reference_questions": self.reference_count,
            "recent_questions": self.recent_count,
            "ood_threshold": self.ood_threshold,
            "signals": [vars(s) for s in self.signals],
            "windows": [
                {
                    "start": w.start.isoformat(),
                    "exchanges": w.exchanges,
                    "abstention_rate": w.abstention_rate,
                    "negative_rate": w.negative_rate,
                }
                for w in self.windows
            ],
        }


def detect_drift(
    reference: Sequence[str],
    recent: Sequence[str],
    index_scores: Callable[[str], np.ndarray],
    embed: Embed | None,
    settings: DriftConfig,
    exchanges: Sequence[Exchange] | None = None,
) -> DriftReport:
    """Test the recent questions against the reference ones (embedding, out of domain) and, given served exchanges,
    the newest window's abstention and negative-feedback rates against the earlier ones."""
    if len(reference) < 2:
        raise HangjiaError("Drift needs at least 2 reference questions (the select stage's training split).")
    s = settings
    rng = np.random.default_rng(s.seed)
    threshold = f"p < {s.alpha:g}"
    enough = len(recent) >= s.min_samples
    short = "" if enough else f"too few recent questions to test ({len(recent)} < drift.min_samples {s.min_samples})"

    # Both tests: at most max_questions a side, drawn with the seed.
    ref_sample, recent_sample = _sample(reference, s.max_questions, rng), _sample(recent, s.max_questions, rng)
    representation = s.embedding
    if representation == "auto":
        chinese = sum(is_chinese(q) for q in [*ref_sample, *recent_sample])
        representation = "terms" if 2 * chinese >= len(ref_sample) + len(recent_sample) else "minilm"
    if representation == "minilm":
        if embed is None:
            raise HangjiaError("The embedding test needs the embedder; set drift.embedding: terms to do without it.")
        vectors = np.asarray(embed([*ref_sample, *recent_sample]), dtype=np.float64)
    else:
        vectors = term_vectors([*ref_sample, *recent_sample])
    x, y = vectors[: len(ref_sample)], vectors[len(ref_sample) :]
    mmd, null95, p = mmd_test(x, y, s.permutations, rng)
    signals = [
        Signal(
            "embedding",
            mmd,
            null95,
            p if enough else None,
            threshold,
            len(recent_sample),
            enough and p < s.alpha,
            short or f"MMD of {MINILM if representation == 'minilm' else 'term'} vectors; reference: 95% of shuffles",
        )
    ]

    # Out of domain: the same questions' best BM25 scores, against the reference's percentile.
    ref_scores, recent_scores = best_scores(index_scores, ref_sample), best_scores(index_scores, recent_sample)
    share, ref_share, cut, p = ood_test(ref_scores, recent_scores, s.ood_percentile, s.permutations, rng)
    signals.append(
        Signal(
            "out_of_domain",
            share,
            ref_share,
            p if enough else None,
            f"{threshold}; best BM25 < {cut:.2f}",
            len(recent_sample),
            enough and p < s.alpha,
            short or f"best BM25 score below the reference's {s.ood_percentile:g}th percentile; p by shuffling",
        )
    )

    spans = windows(exchanges, s.window_days) if exchanges else []
    if spans:
        now, before = spans[-1], spans[:-1]
        for name, hits, total in (("abstention", "abstained", "exchanges"), ("negative_feedback", "negative", "rated")):
            earlier = (sum(getattr(w, hits) for w in before), sum(getattr(w, total) for w in before))
            signals.append(_rising(name, (getattr(now, hits), getattr(now, total)), earlier, s.alpha, s.min_samples))

    ref_points, recent_points = _projection(x, y)
    return DriftReport(
        signals=signals,
        representation=MINILM if representation == "minilm" else TERMS,
        reference_count=len(reference),
        recent_count=len(recent),
        reference_scores=ref_scores,
        recent_scores=recent_scores,
        ood_threshold=cut,
        reference_points=ref_points,
        recent_points=recent_points,
        windows=spans,
    )


def _sample(texts: Sequence[str], limit: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= limit:
        return list(texts)
    return [texts[i] for i in sorted(rng.choice(len(texts), size=limit, replace=False))]


def _out_of_domain(scores: np.ndarray, cut: float | np.ndarray) -> np.ndarray:
    """Below the cut, or sharing no term with any chunk (score 0) even when the cut is 0."""
    return (scores < cut) | (scores <= 0)


def _projection(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y on the first two principal components of x (PCA by SVD around x's mean)."""
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    axes = vt[:2].T
    return (x - mean) @ axes, (y - mean) @ axes


# ---- outputs -----------------------------------------------------------------------------------------------------


def chart(report: DriftReport):
    """A PNG-ready matplotlib Figure: best-BM25-score histograms with the out-of-domain cut, the questions on the
    reference's first two principal components and, with exchanges, the rates per window."""
    from hangjia.core.reports import figure

    panels = 3 if report.windows else 2
    fig = figure(5.0 * panels, 4.2, layout="constrained")
    axes = fig.subplots(1, panels)
    verdict = "DRIFT" if report.drifted else "no drift"
    fig.suptitle(f"hangjia drift: {verdict} ({report.recent_count} recent vs {report.reference_count} reference)")

    top = max(float(report.reference_scores.max(initial=0)), float(report.recent_scores.max(initial=0)), 1.0)
    bins = np.linspace(0, top, 30)
    ax = axes[0]
    ax.hist(report.reference_scores, bins=bins, density=True, alpha=0.55, label="reference", color="tab:blue")
    ax.hist(report.recent_scores, bins=bins, density=True, alpha=0.55, label="recent", color="tab:orange")
    ax.axvline(
        report.ood_threshold, color="black", linestyle="--", label=f"out-of-domain cut {report.ood_threshold:.1f}"
    )
    ood = report.signal("out_of_domain")
    ax.set_title(f"best BM25 score per question (out of domain: {ood.value:.0%})", fontsize=10)
    ax.set_xlabel("BM25 score of the best chunk")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)

    ax = axes[1]
    ax.scatter(*report.reference_points.T, s=10, alpha=0.6, label="reference", color="tab:blue")
    ax.scatter(*report.recent_points.T, s=10, alpha=0.6, label="recent", color="tab:orange")
    emb = report.signal("embedding")
    p = "—" if emb.p_value is None else f"{emb.p_value:.3g}"
    ax.set_title(f"questions' vectors (MMD {emb.value:.3f}, p {p})", fontsize=10)
    ax.set_xlabel(f"PC 1 of the reference's {report.representation} vectors")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=8)

    if report.windows:
        ax = axes[2]
        starts = [w.start for w in report.windows]
        for rate, label in (("abstention_rate", "abstentions"), ("negative_rate", "thumbs down (of rated)")):
            values = [getattr(w, rate) for w in report.windows]
            ax.plot(starts, [np.nan if v is None else v for v in values], marker="o", label=label)
        ax.set_title("served exchanges per window", fontsize=10)
        ax.set_ylabel("rate")
        ax.set_ylim(0, 1)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.legend(fontsize=8)
    return fig


# Gauges for Prometheus (node_exporter's textfile collector reads the file); `hangjia:` as the server's metrics.
GAUGES = {
    ("embedding", "value"): ("hangjia:drift_embedding_distance", "MMD between recent and reference question vectors."),
    ("embedding", "p_value"): ("hangjia:drift_embedding_p_value", "Permutation p-value of the embedding MMD."),
    ("out_of_domain", "value"): (
        "hangjia:drift_out_of_domain_share",
        "Share of recent questions whose best BM25 score is below the reference's cut.",
    ),
    ("out_of_domain", "p_value"): (
        "hangjia:drift_out_of_domain_p_value",
        "Permutation p-value of the out-of-domain share.",
    ),
    ("abstention", "value"): ("hangjia:drift_abstention_rate", "Abstention rate in the newest window."),
    ("negative_feedback", "value"): (
        "hangjia:drift_negative_feedback_rate",
        "Thumbs-down share of rated exchanges in the newest window.",
    ),
}


def write_prom(report: DriftReport, path: Path, now: float | None = None) -> None:
    """The report as Prometheus gauges in the text format (written atomically by prometheus_client), for
    node_exporter's textfile collector: the values above, `hangjia:drift_detected` (1/0, overall and per signal)
    and `hangjia:drift_last_run_timestamp_seconds` so an alert can tell a stale file."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    for s in report.signals:
        for attr in ("value", "p_value"):
            if (s.name, attr) in GAUGES and getattr(s, attr) is not None:
                name, doc = GAUGES[(s.name, attr)]
                Gauge(name, doc, registry=registry).set(getattr(s, attr))
    detected = Gauge("hangjia:drift_detected", "1 when a drift signal is past its threshold.", registry=registry)
    detected.set(int(report.drifted))
    per_signal = Gauge(
        "hangjia:drift_signal_detected", "1 when this signal is past its threshold.", ["signal"], registry=registry
    )
    for s in report.signals:
        per_signal.labels(signal=s.name).set(int(s.drifted))
    stamp = Gauge("hangjia:drift_last_run_timestamp_seconds", "When hangjia drift wrote this file.", registry=registry)
    stamp.set(datetime.now(UTC).timestamp() if now is None else now)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
