"""BM25 vs dense (all-MiniLM-L6-v2) vs hybrid (reciprocal rank fusion) retrieval: recall@k, MRR, index build and
query time on the sample domains' answerable questions, every mode over the same chunks in the same run.

    .venv/bin/python benchmarks/hybrid_retrieval.py [--config configs/kestrel.yaml configs/lanshan.yaml]

Each domain is ingested once into /tmp/ws_<config name> (reused), then indexed once per vector store: the chunks
are embedded once and the dense and hybrid rows share those vectors. Query time is the mean over the questions of
one search for the top 3, after one warm-up query (the embedder is loaded by then).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hangjia.core.config import load_config
from hangjia.core.workspace import Workspace
from hangjia.corpus.chunk import Chunk
from hangjia.corpus.index import BM25Index
from hangjia.corpus.retrieve import Retriever
from hangjia.eval.qa import load_questions
from hangjia.eval.retrieval import recall_at_k
from hangjia.llm.retrieval import embed_function
from hangjia.stages.ingest import ingest, ingested

KS = (1, 2, 3)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def measure(chunks: list[Chunk], questions, store: str, console: Console) -> list[tuple[str, dict, float, float]]:
    """(mode, overall metrics, build seconds, mean query ms) per retrieval mode, over one index."""
    embed = embed_function()
    embed(["warm-up"])  # load the model outside the timings
    _, bm25_s = timed(lambda: BM25Index.build(chunks))
    with tempfile.TemporaryDirectory() as tmp:
        built, hybrid_s = timed(lambda: Retriever.build(chunks, Path(tmp), "hybrid", store, embed))
        rows = []
        for mode, rrf_k, build_s in (
            ("bm25", 60, bm25_s),
            ("dense", 60, hybrid_s),
            ("hybrid", 60, hybrid_s),
            ("hybrid", 10, hybrid_s),
        ):
            retriever = Retriever(built.bm25, mode, None if mode == "bm25" else built.store, embed, rrf_k)
            retriever.search("warm-up", 3)
            started = time.perf_counter()
            result = recall_at_k(retriever, questions, ks=KS)
            seconds = time.perf_counter() - started
            name = f"{mode} (RRF k={rrf_k})" if mode == "hybrid" else mode
            rows.append((name, result["overall"], build_s, 1000 * seconds / max(len(questions), 1)))
            console.log(f"{store} {name}: {result['overall']}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configs = [Path("configs/kestrel.yaml"), Path("configs/lanshan.yaml")]
    ap.add_argument("--config", type=Path, nargs="+", default=configs)
    ap.add_argument("--stores", nargs="+", default=["memory", "lancedb"])
    args = ap.parse_args()
    console = Console()
    table = Table(title="Retrieval modes on the sample domains' answerable questions (top 3 searched)")
    for col in ("domain", "store", "mode", *(f"recall@{k}" for k in KS), "MRR", "build s", "query ms"):
        table.add_column(col, justify="left" if col in ("domain", "store", "mode") else "right")
    for config in args.config:
        cfg = load_config(config)
        ws = Workspace(Path(tempfile.gettempdir()) / f"ws_{config.stem}")
        ingest(ws, cfg, Console(quiet=True))
        chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
        questions = [q for q in load_questions(Path(cfg.eval.questions)) if q.type != "unanswerable"]
        domain = f"{config.stem} ({len(chunks)} chunks, {len(questions)} q)"
        for store in args.stores:
            for name, overall, build_s, query_ms in measure(chunks, questions, store, console):
                cells = [f"{overall[f'recall@{k}'] * 100:.1f}" for k in KS]
                table.add_row(domain, store, name, *cells, f"{overall['mrr']:.3f}", f"{build_s:.2f}", f"{query_ms:.1f}")
        table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
