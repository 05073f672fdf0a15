"""BM25 vs dense (all-MiniLM-L6-v2) vs hybrid (reciprocal rank fusion) retrieval: recall@k, MRR, index build and
query time on the sample domains' answerable questions, every mode over the same chunks in the same run.

    .venv/bin/python benchmarks/hybrid_retrieval.py [--config configs/kestrel.yaml configs/lanshan.yaml]

Each domain is ingested once into /tmp/ws_<config name> (reused). BM25 is built alone (its build time is BM25's),
then once per vector store with the chunks embedded (build time: BM25 + embedding + writing the store); the dense
and hybrid rows of a store share those vectors. Query time is the mean over the questions of one search for the
top 3 (dense and hybrid: embedding the question included), after a warm-up query that loads the embedder.
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
from hangjia.corpus.retrieve import RRF_K, Retriever
from hangjia.eval.qa import load_questions
from hangjia.eval.retrieval import recall_at_k
from hangjia.llm.retrieval import embed_function
from hangjia.stages.ingest import ingest, ingested

KS = (1, 2, 3)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def query_rows(retriever: Retriever, questions, label: str, build_s: float, console: Console):
    """(label, overall metrics, build seconds, mean query ms) of one retriever."""
    retriever.search("warm-up", 3)
    started = time.perf_counter()
    result = recall_at_k(retriever, questions, ks=KS)
    query_ms = 1000 * (time.perf_counter() - started) / max(len(questions), 1)
    console.log(f"{label}: {result['overall']}, {query_ms:.1f} ms/query")
    return label, result["overall"], build_s, query_ms


def measure(chunks: list[Chunk], questions, stores: list[str], console: Console) -> list[tuple]:
    """BM25 alone (no vectors), then dense and hybrid over each store: the chunks are embedded once per store."""
    embed = embed_function()
    embed(["warm-up"])  # load the model outside the timings
    bm25, bm25_s = timed(lambda: BM25Index.build(chunks))
    rows = [query_rows(Retriever(bm25, "bm25"), questions, "bm25", bm25_s, console)]
    for store in stores:
        with tempfile.TemporaryDirectory() as tmp:
            built, build_s = timed(lambda: Retriever.build(chunks, Path(tmp), "hybrid", store, embed))  # noqa: B023
            for mode in ("dense", "hybrid"):
                retriever = Retriever(built.bm25, mode, built.store, embed, RRF_K)
                label = f"{mode} / {store}" if mode == "dense" else f"hybrid (RRF k={RRF_K}) / {store}"
                rows.append(query_rows(retriever, questions, label, build_s, console))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configs = [Path("configs/kestrel.yaml"), Path("configs/lanshan.yaml")]
    ap.add_argument("--config", type=Path, nargs="+", default=configs)
    ap.add_argument("--stores", nargs="+", default=["memory", "lancedb"])
    args = ap.parse_args()
    console = Console()
    table = Table(title="Retrieval modes on the sample domains' answerable questions (top 3 searched)")
    for col in ("domain", "mode / store", *(f"recall@{k}" for k in KS), "MRR", "build s", "query ms"):
        table.add_column(col, justify="left" if col in ("domain", "mode / store") else "right")
    for config in args.config:
        cfg = load_config(config)
        ws = Workspace(Path(tempfile.gettempdir()) / f"ws_{config.stem}")
        ingest(ws, cfg, Console(quiet=True))
        chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
        questions = [q for q in load_questions(Path(cfg.eval.questions)) if q.type != "unanswerable"]
        domain = config.stem
        console.log(f"{domain}: {len(chunks)} chunks, {len(questions)} answerable questions")
        for name, overall, build_s, query_ms in measure(chunks, questions, args.stores, console):
            cells = [f"{overall[f'recall@{k}'] * 100:.1f}" for k in KS]
            table.add_row(domain, name, *cells, f"{overall['mrr']:.3f}", f"{build_s:.2f}", f"{query_ms:.1f}")
        table.add_section()
    Console(width=150).print(table)


if __name__ == "__main__":
    main()
