"""How BM25 should split Chinese: the whole run of characters as one token (what corpus/index.py did), characters
with their bigrams, or jieba words — recall@k and MRR on a sample domain's questions, each variant in the same run.

    .venv/bin/python benchmarks/chinese_retrieval.py [--config configs/lanshan.yaml] [--workspace /tmp/ws_lanshan]

Ingests the domain once (the workspace is reused), then builds one index per tokenizer over the same chunks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hangjia.core.config import load_config
from hangjia.core.words import split_han_kana
from hangjia.core.workspace import Workspace
from hangjia.corpus import index as bm25
from hangjia.corpus.chunk import Chunk
from hangjia.eval.qa import load_questions
from hangjia.eval.retrieval import recall_at_k
from hangjia.stages.index import index as build_index
from hangjia.stages.ingest import ingest, ingested

ORIGINAL = bm25.tokenize


def whole_runs(text: str) -> list[str]:
    """What corpus/index.py did before: a run of Chinese characters is one token, as any other word."""
    return bm25.word_tokens(text)


def bigrams(text: str) -> list[str]:
    """What corpus/index.py does now."""
    return ORIGINAL(text)


def jieba_words(text: str) -> list[str]:
    import jieba  # not a dependency of Hangjia: pip install jieba to run this variant

    return split_han_kana(text, bm25.word_tokens, lambda run: [w for w in jieba.lcut_for_search(run) if w.strip()])


VARIANTS = {
    "whole runs (before)": whole_runs,
    "characters + bigrams (now)": bigrams,
    "jieba (search mode)": jieba_words,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/lanshan.yaml"))
    ap.add_argument("--workspace", type=Path, default=Path("/tmp/ws_lanshan"))
    args = ap.parse_args()
    console = Console()
    cfg = load_config(args.config)
    ws = Workspace(args.workspace)
    ingest(ws, cfg, console)
    build_index(ws, cfg, console)
    chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
    questions = [q for q in load_questions(Path(cfg.eval.questions)) if q.type != "unanswerable"]
    table = Table(title=f"BM25 over {len(chunks)} chunks, {len(questions)} answerable questions ({args.config.name})")
    for col in ("tokenizer", "recall@1", "recall@2", "recall@5", "MRR"):
        table.add_column(col, justify="left" if col == "tokenizer" else "right")
    for name, tokenize in VARIANTS.items():
        bm25.tokenize = tokenize
        try:
            overall = recall_at_k(bm25.BM25Index.build(chunks), questions, ks=(1, 2, 5))["overall"]
        finally:
            bm25.tokenize = ORIGINAL
        cells = [f"{overall[f'recall@{k}'] * 100:.1f}" for k in (1, 2, 5)]
        table.add_row(name, *cells, f"{overall['mrr']:.3f}")
    console.print(table)


if __name__ == "__main__":
    main()
