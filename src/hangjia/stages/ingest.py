"""`hangjia ingest`: load, clean, redact, dedup and chunk the documents into versioned datasets."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace, sha256_tree
from hangjia.corpus.clean import CleanOptions
from hangjia.corpus.datasets import DatasetStore
from hangjia.corpus.pii import KEEP_RULES
from hangjia.llm.models import PRETRAINED_BASE
from hangjia.stages.reporting import done, progress_bar, skipped


def ingest(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Load every document under cfg.docs, clean, dedup and chunk it with provenance, streamed in batches so memory
    stays bounded for corpora larger than RAM (see corpus/ingest.py); failures are skipped and reported."""
    from hangjia.corpus.documents import iter_files
    from hangjia.corpus.ingest import ingest_documents

    if cfg.docs is None:
        raise HangjiaError("No documents folder given; pass --docs DIR or set `docs:` in hangjia.yaml.")
    docs_dir = Path(cfg.docs)
    if not docs_dir.is_dir():
        raise HangjiaError(f"Docs folder {docs_dir} does not exist; pass --docs with a folder of documents.")
    inputs = {"docs": sha256_tree(docs_dir)}
    config = {"docs": str(docs_dir), **cfg.ingest.model_dump(), "tokenizer_of": cfg.train.base_model}
    if not force and ws.is_current("ingest", inputs, config):
        return skipped("ingest", ws)
    with console.status("loading the base model's tokenizer (chunks are measured in its tokens)"):
        count_tokens = _token_counter(cfg)
    c = cfg.ingest
    with ws.stage("ingest", inputs, config) as run, progress_bar(console) as progress:
        files = len(iter_files(docs_dir))  # the loader's own walk: hidden files are not counted
        task = progress.add_task("ingest", total=files, status="")
        work = tempfile.TemporaryDirectory(dir=run.dir, prefix=".work-")  # its files move into the dataset store
        with work:
            out = ingest_documents(
                docs_dir,
                Path(work.name),
                max_file_bytes=int(c.max_file_mb * 2**20),
                clean_options=_clean_options(cfg),
                drop_repeated=c.clean,
                dedup=c.dedup,
                near_threshold=c.near_dup_threshold,
                num_perm=c.num_perm,
                semantic_threshold=c.semantic_dup_threshold,
                embed=embedder() if c.dedup and c.semantic_dup_threshold is not None else None,
                chunk_tokens=c.chunk_tokens,
                chunk_overlap=c.chunk_overlap_tokens,
                count_tokens=count_tokens,
                engine=c.engine,
                on_file=lambda rel: progress.update(task, advance=1, status=rel),
                on_status=lambda text: progress.update(task, status=text),
            )
            store = datasets(ws)
            docs_v = store.save_file("documents", out.documents, stage="ingest", config=config)
            chunks_v = store.save_file("chunks", out.chunks, parents=[docs_v.ref], stage="ingest", config=config)
        kept = out.cleaning.get("pii_kept", [])  # published contacts left in the text, with the rule that kept each
        report = {
            "documents": out.document_count,
            "chunks": out.chunk_count,
            "skipped": [{"path": s.path, "reason": s.reason} for s in out.skipped]
            + [{"path": source, "reason": f"filtered: {reason}"} for source, reason in out.filtered],
            "cleaning": out.cleaning,
            "pii": out.cleaning.get("pii", {}),
            "pii_kept": kept,
            "pii_keep_rules": {rule: why for rule, why in KEEP_RULES.items() if any(k["rule"] == rule for k in kept)},
            "formats": out.formats,
            "duplicates": [asdict(c) for c in out.clusters],
            "datasets": {"documents": docs_v.ref, "chunks": chunks_v.ref},
        }
        (run.dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        run.counts.update(documents=out.document_count, chunks=out.chunk_count, skipped=len(report["skipped"]))
        run.counts.update(pii_redacted=sum(report["pii"].values()), pii_kept=sum(k["count"] for k in kept))
        run.counts.update(duplicates_dropped=_dropped(out.clusters))
        run.counts.update(documents_dataset=docs_v.ref, chunks_dataset=chunks_v.ref)
    return {**done("ingest", ws), "report": report}


def _token_counter(cfg: ProjectConfig):
    """Token counts by the base model's tokenizer, so chunks fit the model that will read them."""
    from hangjia.llm.models import load_tokenizer, resolve_base

    tokenizer = load_tokenizer(resolve_base(original_base(cfg)))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def original_base(cfg: ProjectConfig) -> str:
    """The base model before any stage of ours: what `pretrain` continued from, when training starts there."""
    return cfg.pretrain.base_model if cfg.train.base_model == PRETRAINED_BASE else cfg.train.base_model


def embedder():
    """Unit vectors of texts, for semantic dedup."""
    from hangjia.llm.models import load_embedder

    embedder = load_embedder()
    return lambda texts: embedder.encode(texts, normalize_embeddings=True)


def _dropped(clusters: list) -> int:
    return sum(len(c.members) - 1 for c in clusters)


def _clean_options(cfg: ProjectConfig) -> CleanOptions | None:
    """Cleaning and PII redaction before anything is stored (both switchable); None when both are off."""
    c = cfg.ingest
    if not c.clean and not c.redact_pii:
        return None
    return CleanOptions(
        min_chars=c.min_chars if c.clean else 0,
        max_symbol_ratio=c.max_symbol_ratio if c.clean else 1.0,
        max_repeat_ratio=c.max_repeat_ratio if c.clean else 1.0,
        redact_pii=c.redact_pii,
        placeholders=c.pii_placeholders or None,
        pii_allow=tuple(c.pii_allow),
        keep_org_contacts=c.keep_org_contacts,
    )


def datasets(ws: Workspace) -> DatasetStore:
    return DatasetStore(ws.root / "datasets")


def ingested(ws: Workspace, name: str) -> list[dict[str, Any]]:
    """Rows of the dataset version (documents or chunks) that the last ingest produced."""
    manifest = ws.require("ingest", "`hangjia ingest`")
    return datasets(ws).resolve(manifest["counts"][f"{name}_dataset"]).read().to_pylist()
