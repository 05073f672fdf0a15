"""Retrieval quality on the QA set: recall@k and MRR of a retriever (BM25, dense or hybrid) against each question's
source documents.

A question is a hit at k when any of the top-k chunks comes from one of its `source` documents. Question files name
sources relative to their own folder ("docs/faq.md") while chunks carry paths relative to the docs folder
("faq.md"), so two paths match when the shorter one is the tail of the longer, part by part: "docs/faq.md" matches
"faq.md" and "sub/faq.md" does not match "other/faq.md". Questions without a source are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hangjia.corpus.index import BM25Index
    from hangjia.corpus.retrieve import Retriever
    from hangjia.eval.qa import Question


def _parts(path: str) -> tuple[str, ...]:
    return tuple(p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", "."))


def source_matches(chunk_source: str, wanted: str) -> bool:
    """Whether a chunk's source is the wanted document: one path is the other's tail (at least the file name)."""
    a, b = _parts(chunk_source), _parts(wanted)
    n = min(len(a), len(b))
    return n > 0 and a[-n:] == b[-n:]


def _field(q: Question | Mapping[str, Any], name: str, default: Any = None) -> Any:
    return q.get(name, default) if isinstance(q, Mapping) else getattr(q, name, default)


def _metrics(ranks: list[int | None], ks: Sequence[int]) -> dict[str, Any]:
    n = len(ranks)
    out: dict[str, Any] = {"n": n}
    for k in ks:
        out[f"recall@{k}"] = round(sum(r is not None and r <= k for r in ranks) / n, 4) if n else None
    out["mrr"] = round(sum(1 / r for r in ranks if r is not None) / n, 4) if n else None
    return out


def recall_at_k(
    index: Retriever | BM25Index, questions: Sequence[Question | Mapping[str, Any]], ks: Sequence[int] = (1, 3, 5)
) -> dict[str, Any]:
    """recall@k for each k and MRR (over the top max(ks) chunks), overall and per question type.

    Returns {"ks", "skipped" (questions without a source), "overall": {"n", "recall@1", ..., "mrr"},
    "by_type": {type: same}, "per_question": [{"id", "type", "rank"}]}, rank being the 1-based position of the
    first matching chunk, or None when none of the top max(ks) match.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    depth = ks[-1]
    per_question, skipped = [], 0
    for q in questions:
        sources = list(_field(q, "source") or [])
        if not sources:
            skipped += 1
            continue
        hits = index.search(_field(q, "question"), k=depth)
        rank = next(
            (i for i, hit in enumerate(hits, start=1) if any(source_matches(hit.chunk.source, s) for s in sources)),
            None,
        )
        per_question.append({"id": _field(q, "id"), "type": _field(q, "type", "lookup"), "rank": rank})
    by_type: dict[str, list[int | None]] = defaultdict(list)
    for row in per_question:
        by_type[row["type"]].append(row["rank"])
    return {
        "ks": ks,
        "skipped": skipped,
        "overall": _metrics([r["rank"] for r in per_question], ks),
        "by_type": {t: _metrics(ranks, ks) for t, ranks in sorted(by_type.items())},
        "per_question": per_question,
    }
