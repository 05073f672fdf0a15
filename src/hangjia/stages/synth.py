"""`hangjia synth`: question/answer pairs from the configured generators, grounded and decontaminated."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import write_jsonl
from hangjia.core.workspace import Workspace, sha256_file
from hangjia.stages.index import searcher
from hangjia.stages.ingest import datasets, ingested
from hangjia.stages.reporting import done, skipped


def synth(
    ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Question/answer pairs from the configured generators, each grounded in its passage, decontaminated."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.corpus.documents import Document
    from hangjia.instruct.generate import needs_teacher, run_generators
    from hangjia.instruct.report import write_report

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"], **_file_inputs(cfg)}
    config = {**cfg.synth.model_dump(mode="json"), "rag_top_k": cfg.rag.top_k}
    if needs_teacher(cfg):
        config["teacher"] = cfg.teacher.model_dump()
    if dry_run:
        return _dry_run(ws, cfg, console)
    if not force and ws.is_current("synth", inputs, config):
        return skipped("synth", ws)
    documents = [Document.from_dict(r) for r in ingested(ws, "documents")]
    chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
    teacher = _teacher(ws, cfg, console) if needs_teacher(cfg) else None
    with ws.stage("synth", inputs, config) as run, console.status("synthesizing") as status:
        pairs, drops = run_generators(
            cfg,
            documents,
            chunks,
            teacher=teacher,
            search=searcher(ws),
            status=lambda name: status.update(f"synthesizing: {name} ({len(chunks)} chunks)"),
        )
        if not pairs:
            raise HangjiaError(f"The generators ({', '.join(cfg.synth.generators)}) found no pairs in these documents.")
        pairs, contaminated = _decontaminate(pairs, cfg)
        if contaminated:
            drops["decontamination"] = Counter({"overlaps an evaluation question": contaminated})
        rows = [p.to_dict() for p in pairs]
        pairs_v = datasets(ws).save(
            "pairs", _table(rows), parents=[upstream["counts"]["chunks_dataset"]], stage="synth", config=config
        )
        write_jsonl(run.dir / "pairs.jsonl", rows)
        counts = {"pairs": len(rows), "decontaminated": contaminated}
        if teacher is not None:
            counts.update({f"teacher_{k}": v for k, v in teacher.stats.to_dict().items()})
        summary = write_report(run.dir, "hangjia synth", pairs, drops=drops, counts=counts)
        run.counts.update(counts, by_generator=summary["generators"], dataset=pairs_v.ref)
    return {**done("synth", ws), "summary": summary}


def _table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows))


def _file_inputs(cfg: ProjectConfig) -> dict[str, str]:
    """Hashes of the files synth reads besides the ingested data, so editing one re-runs it."""
    files = {"eval_questions": cfg.eval.questions if cfg.synth.decontaminate else None}
    files["seed_tasks"] = cfg.synth.seed_tasks if "self_instruct" in cfg.synth.generators else None
    files.update({f"triples:{p.name}": p for p in cfg.synth.triples})
    files.update({f"import:{p.name}": p for p in cfg.synth.imports})
    return {k: sha256_file(Path(p)) for k, p in files.items() if p is not None and Path(p).is_file()}


def _teacher(ws: Workspace, cfg: ProjectConfig, console: Console):
    """The configured teacher behind the workspace's response cache (a rerun costs nothing)."""
    from hangjia.llm.models import resolve_base
    from hangjia.llm.teacher import make_teacher

    t = cfg.teacher
    model = t.model
    if t.kind == "embedded":
        with console.status("preparing the embedded teacher"):
            model = str(resolve_base("embedded"))
    return make_teacher(
        kind=t.kind,
        model=model,
        base_url=t.base_url,
        api_key_env=t.api_key_env,
        concurrency=t.concurrency,
        max_retries=t.max_retries,
        timeout_s=t.timeout_s,
        cache_path=ws.root / "cache" / "teacher.sqlite",
        budget_tokens=t.budget_tokens,
        price_per_1k_tokens=t.price_per_1k_tokens,
    )


def _dry_run(ws: Workspace, cfg: ProjectConfig, console: Console) -> dict[str, Any]:
    """What the teacher generators would cost, without sending a request."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.instruct.selfqa import questions_prompt

    if "self_qa" not in cfg.synth.generators:
        raise HangjiaError("--dry-run estimates the teacher's cost; no teacher generator (self_qa) is configured.")
    chunks = [Chunk.from_dict(r) for r in ingested(ws, "chunks")]
    teacher = _teacher(ws, cfg, console)
    # Step 1 of Self-QA (questions per chunk); step 2 (one answer per question) is estimated from it.
    requests = [questions_prompt(c, cfg.synth.questions_per_chunk) for c in chunks]
    estimate = teacher.estimate(requests, cfg.teacher.max_tokens).to_dict()
    return {"stage": "synth", "skipped": True, "counts": {"dry_run": estimate}, "dir": str(ws.stage_dir("synth"))}


def _decontaminate(pairs: list, cfg: ProjectConfig) -> tuple[list, int]:
    """Drop pairs that overlap the evaluation questions (when decontamination is on and questions are set)."""
    from hangjia.corpus.dedup import decontaminate
    from hangjia.eval.qa import load_questions

    if not cfg.synth.decontaminate or cfg.eval.questions is None or not Path(cfg.eval.questions).is_file():
        return pairs, 0
    eval_texts = [q.question for q in load_questions(Path(cfg.eval.questions))]
    texts = [f"{p.question}\n{p.answer}" for p in pairs]
    bad = set(decontaminate(texts, eval_texts, n=cfg.synth.decontaminate_ngram))
    return [p for i, p in enumerate(pairs) if i not in bad], len(bad)
