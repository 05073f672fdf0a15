"""The index stage (run by `hangjia ingest`): BM25 over the ingested chunks, for retrieval."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from hangjia.core.workspace import Workspace
from hangjia.stages.ingest import ingested
from hangjia.stages.reporting import done, skipped


def index(ws: Workspace, console: Console, force: bool = False) -> dict[str, Any]:
    """BM25 over the ingested chunks, for retrieval-augmented answers."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.corpus.index import BM25Index

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"]}
    if not force and ws.is_current("index", inputs, {}):
        return skipped("index", ws)
    with ws.stage("index", inputs, {}) as run:
        # BM25 needs every chunk's terms in memory anyway: this is the index's own memory, not ingest's.
        chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
        with console.status(f"indexing {len(chunks)} chunks"):
            BM25Index.build(chunks).save(run.dir)
        run.counts.update(chunks=len(chunks))
    return done("index", ws)


def searcher(ws: Workspace):
    """BM25 search over the indexed chunks, when the index stage has run (retrieval-aware generators need it)."""
    from hangjia.corpus.index import BM25Index

    if ws.manifest("index") is None:
        return None
    index = BM25Index.load(ws.stage_dir("index"))
    return lambda query, k: [chunk for chunk, _ in index.search(query, k)]
