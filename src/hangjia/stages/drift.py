"""`hangjia drift`: the workspace's training questions and index against a file of recent questions (eval/drift.py).

It reads the workspace and writes nothing there; the command writes the outputs it is asked for (JSON, chart,
Prometheus file) where it is told.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import iter_jsonl
from hangjia.core.workspace import Workspace
from hangjia.eval.drift import DriftReport, detect_drift, load_exchanges, load_questions


def reference_questions(ws: Workspace) -> list[str]:
    """The distinct questions of the select stage's training split, less the general prompts of the forgetting
    guard (they are there to keep general skills, not what the domain is asked). Paraphrases count: users word
    questions that way too; a retrieval-aware example repeats its question and counts once."""
    ws.require("select", "`hangjia select` (or pass --reference with a questions file)")
    seen: dict[str, None] = {}
    for row in iter_jsonl(ws.stage_dir("select") / "train.jsonl"):
        question = " ".join(str(row.get("question", "")).split())
        if question and row.get("generator") != "general":
            seen.setdefault(question)
    return list(seen)


def drift(
    ws: Workspace,
    cfg: ProjectConfig,
    console: Console,
    questions: Path,
    exchanges: Path | None = None,
    reference: Path | None = None,
) -> DriftReport:
    """Recent questions (and served exchanges) against the reference questions — `reference`, else drift.reference,
    else the training split — and the index."""
    from hangjia.corpus.index import BM25Index
    from hangjia.llm.retrieval import embed_function

    recent = load_questions(questions)
    served = load_exchanges(exchanges) if exchanges is not None else None
    ws.require("index", "`hangjia ingest`")
    reference = reference or cfg.drift.reference
    ref = load_questions(reference) if reference is not None else reference_questions(ws)
    if len(ref) < cfg.drift.min_samples:
        raise HangjiaError(
            f"Only {len(ref)} reference questions (need drift.min_samples = {cfg.drift.min_samples}); pass --reference "
            "with a larger questions file."
        )
    index = BM25Index.load(ws.stage_dir("index"))
    with console.status(f"comparing {len(recent)} recent questions with {len(ref)} reference questions"):
        return detect_drift(ref, recent, index.scores, embed_function(), cfg.drift, served)
