"""`hangjia build`: every stage in order. Read this file first to know the whole flow.

    docs/ ──ingest──► load → clean → redact PII → dedup → chunk: documents + chunks (versioned datasets)
                           │
                           └──index──► BM25 over chunks (RAG)
                           │
                           └──synth──► question/answer pairs (extractive, knowledge-graph, Self-QA, Self-Instruct;
                                             │            grounded, decontaminated) + report.html
                                             └──select──► dedup, IFD / one-shot quality, K-center to a budget,
                                                   │       + paraphrases, retrieval-aware (RAFT) and general
                                                   │       self-distilled examples ─► train / val / test + export
                                                   └──train──► LoRA adapter on the base model
                                                              │
                                                              └──eval──► base vs tuned (vs production) × RAG
                                                                         off/on, MCQ, retrieval, gate

Off the main line, each run by its own command: `pretrain` (before train, with train.base_model: pretrain),
`dpo` and `reward` (after train), `tune` (searches train's settings), `export` (GGUF of the domain model).

Each stage is one module here. It skips itself when its inputs and config are unchanged (core/workspace.py), and
writes into a staging folder that replaces the old output only once complete.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.workspace import Workspace
from hangjia.stages.eval import evaluate
from hangjia.stages.index import index
from hangjia.stages.ingest import ingest
from hangjia.stages.select import select
from hangjia.stages.synth import synth
from hangjia.stages.train import train


def build(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> list[dict[str, Any]]:
    """All stages in order; evaluation only when questions are configured."""
    results = [
        ingest(ws, cfg, console, force),
        index(ws, cfg, console, force),
        synth(ws, cfg, console, force),
        select(ws, cfg, console, force),
        train(ws, cfg, console, force),
    ]
    if cfg.eval.questions is not None:
        results.append(evaluate(ws, cfg, console, force))
    return results
