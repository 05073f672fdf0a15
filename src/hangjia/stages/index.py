"""The index stage (run by `hangjia ingest`): BM25 over the ingested chunks and, for dense and hybrid retrieval,
their embeddings in the rag.vector_store, searched as rag.retrieval says."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.workspace import Workspace
from hangjia.stages.ingest import ingested
from hangjia.stages.reporting import done, progress_bar, skipped


def index(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """BM25 and chunk embeddings over the ingested chunks, for retrieval-augmented answers."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.llm.retrieval import build_retriever

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"]}
    config = {"retrieval": cfg.rag.retrieval, "vector_store": cfg.rag.vector_store}
    if not force and ws.is_current("index", inputs, config):
        return skipped("index", ws)
    with ws.stage("index", inputs, config) as run:
        # BM25 needs every chunk's terms in memory anyway: this is the index's own memory, not ingest's.
        chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
        # bm25 (the default) embeds nothing: the chunk vectors would only give each hit a dense cosine, and that
        # cosine does not tell kestrel's unanswerable questions from its answerable ones (median 0.55 vs 0.59 for
        # the top-2 passages), so no check reads it; it would cost MiniLM at every RAG query.
        if cfg.rag.retrieval == "bm25" or cfg.rag.vector_store == "none":
            with console.status(f"indexing {len(chunks)} chunks"):
                build_retriever(chunks, run.dir, cfg.rag.retrieval, None)
        else:
            # Embedding is the cost here: kestrel's 182 chunks took 11-12 s on 2 shared CPU cores (load ~6), BM25 0.03 s
            # (benchmarks/hybrid_retrieval.py).
            with progress_bar(console) as progress:
                task = progress.add_task("embedding chunks", total=len(chunks), status=cfg.rag.vector_store)
                build_retriever(
                    chunks, run.dir, cfg.rag.retrieval, cfg.rag.vector_store, lambda n: progress.advance(task, n)
                )
        run.counts.update(chunks=len(chunks))
    return done("index", ws)


def searcher(ws: Workspace):
    """Search over the indexed chunks, when the index stage has run (retrieval-aware generators need it)."""
    from hangjia.llm.retrieval import load_retriever

    if ws.manifest("index") is None:
        return None
    retriever = load_retriever(ws.stage_dir("index"))
    return lambda query, k: [hit.chunk for hit in retriever.search(query, k)]
