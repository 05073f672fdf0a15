"""`hangjia select`: dedup, score, diversify and budget the pairs; add derived and general examples; split."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import read_jsonl, write_jsonl
from hangjia.core.workspace import Workspace, sha256_file
from hangjia.stages.index import searcher
from hangjia.stages.ingest import embedder, ingested
from hangjia.stages.reporting import done, skipped


def select(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Dedup, score, diversify and budget the pairs; add paraphrases, retrieval-aware and general examples; split."""
    from hangjia.instruct.formats import export_pairs
    from hangjia.instruct.report import write_report
    from hangjia.instruct.selection import curate
    from hangjia.instruct.synth import QAPair

    upstream = ws.require("synth", "`hangjia synth`")
    index = ws.manifest("index") or {}
    inputs = {"synth": upstream["fingerprint"], "index": index.get("fingerprint", "")}
    if cfg.select.general_prompts is not None:
        inputs["general_prompts"] = sha256_file(Path(cfg.select.general_prompts))
    config = {**cfg.select.model_dump(mode="json"), "base_model": cfg.train.base_model, "rag_top_k": cfg.rag.top_k}
    if not force and ws.is_current("select", inputs, config):
        return skipped("select", ws)
    pairs = [QAPair.from_dict(r) for r in read_jsonl(ws.stage_dir("synth") / "pairs.jsonl")]
    with ws.stage("select", inputs, config) as run, console.status("selecting") as status:
        parts = _selection_parts(ws, cfg, pairs, status)
        out = curate(pairs, cfg.select, **parts)
        for name, split in (("train", out.train), ("val", out.val), ("test", out.test)):
            write_jsonl(run.dir / f"{name}.jsonl", [p.to_dict() for p in split])
            export_pairs(split, run.dir / "export", f"hangjia_{name}", fmt=cfg.select.export_format)
        scored = [{"question": q, "score": round(v, 4)} for q, v in sorted(out.scores.items(), key=lambda kv: -kv[1])]
        write_jsonl(run.dir / "scores.jsonl", scored)
        summary = write_report(
            run.dir, "hangjia select", out.train + out.val + out.test, drops=out.drops, counts=out.counts
        )
        run.counts.update(out.counts, by_generator=summary["generators"])
    return {**done("select", ws), "summary": summary}


def _selection_parts(ws: Workspace, cfg: ProjectConfig, pairs: list, status) -> dict[str, Any]:
    """The model-dependent pieces of selection: embedder, quality scorer, derived examples, general pairs."""
    from hangjia.corpus.chunk import Chunk
    from hangjia.llm.models import load_causal_lm, load_tokenizer, resolve_base

    c = cfg.select
    embed = embedder() if (c.dedup and c.semantic_dup_threshold is not None) or c.diversity == "kcenter" else None
    base_dir = resolve_base(cfg.train.base_model, ws.root)
    model = tokenizer = None
    if c.quality != "none":
        status.update("loading the base model")
        model, tokenizer = load_causal_lm(base_dir), load_tokenizer(base_dir)

    def score(candidates: list) -> list[float]:
        from hangjia.instruct.selectors import ifd_scores, one_shot_gains

        rows = [(p.user_turn(), p.answer) for p in candidates]
        if c.quality == "ifd":
            status.update(f"scoring {len(rows)} pairs by IFD")
            return ifd_scores(model, tokenizer, rows, batch_size=32)
        anchors = random.Random(c.seed).sample(rows, min(c.nuggets_anchors, len(rows)))
        status.update(f"scoring {len(rows)} pairs by one-shot gain on {len(anchors)} anchors")
        return one_shot_gains(model, tokenizer, rows, anchors, batch_size=32)

    search = searcher(ws)
    chunks = {r["id"]: Chunk.from_dict(r) for r in ingested(ws, "chunks")} if c.raft else {}

    def derive(selected: list) -> tuple[list, dict[str, Counter]]:
        from hangjia.instruct.paraphrase import paraphrase_pairs
        from hangjia.instruct.raft import raft_examples

        made, drops = [], {}
        if c.paraphrases:
            status.update(f"paraphrasing {len(selected)} questions")
            extra, drops["paraphrase"] = paraphrase_pairs(selected, per_question=c.paraphrases, seed=c.seed)
            made += extra
        if c.raft:
            if search is None:
                raise HangjiaError(
                    "Retrieval-aware examples need the index, which `hangjia ingest` builds; run it "
                    "(or set select.raft: false)."
                )
            status.update(f"retrieval-aware examples for {len(selected)} pairs")
            grounded = [p for p in selected if p.chunk_id in chunks]
            extra, drops["raft"] = raft_examples(
                grounded, chunks, search, distractors=c.raft_distractors, p_gold=c.raft_p_gold, seed=c.seed
            )
            made += extra
        return made, drops

    general = []
    if c.general_ratio > 0:
        from hangjia.instruct.forgetting_guard import load_general_prompts, self_distilled
        from hangjia.llm.teacher import CachedTeacher, LocalTeacher

        prompts = load_general_prompts(c.general_prompts)
        status.update(f"the base model answers {len(prompts)} general prompts (forgetting guard)")
        base = CachedTeacher(LocalTeacher(base_dir, batch_size=16), ws.root / "cache" / "teacher.sqlite")
        general = self_distilled(prompts, base)
    return {
        "embed": embed,
        "score": score if c.quality != "none" else None,
        "derive": derive if c.paraphrases or c.raft else None,
        "general": general,
    }
