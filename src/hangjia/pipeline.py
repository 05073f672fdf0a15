"""`hangjia build`: the stages in order. Read this file to know the whole flow.

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
                                                                         off/on (eval_stage.py)

Each stage skips itself when its inputs and config are unchanged (see workspace.py), and writes
into a staging folder that replaces the old output only once complete.
"""

from __future__ import annotations

import json
import random
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hangjia.config import ProjectConfig
from hangjia.data.clean import CleanOptions
from hangjia.data.datasets import DatasetStore
from hangjia.errors import HangjiaError
from hangjia.models import PRETRAINED_BASE
from hangjia.workspace import Workspace, sha256_file, sha256_tree


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=True,
    )


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _skipped(name: str, ws: Workspace) -> dict[str, Any]:
    manifest = ws.manifest(name) or {}
    return {"stage": name, "skipped": True, "counts": manifest.get("counts", {}), "dir": str(ws.stage_dir(name))}


def _done(name: str, ws: Workspace) -> dict[str, Any]:
    return {**_skipped(name, ws), "skipped": False}


def ingest(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Load every document under cfg.docs, clean, dedup and chunk it with provenance, streamed in batches so memory
    stays bounded for corpora larger than RAM (see data/ingest.py); failures are skipped and reported."""
    from hangjia.data.documents import iter_files
    from hangjia.data.ingest import ingest_documents

    if cfg.docs is None:
        raise HangjiaError("No documents folder given; pass --docs DIR or set `docs:` in hangjia.yaml.")
    docs_dir = Path(cfg.docs)
    if not docs_dir.is_dir():
        raise HangjiaError(f"Docs folder {docs_dir} does not exist; pass --docs with a folder of documents.")
    inputs = {"docs": sha256_tree(docs_dir)}
    config = {"docs": str(docs_dir), **cfg.ingest.model_dump(), "tokenizer_of": cfg.train.base_model}
    if not force and ws.is_current("ingest", inputs, config):
        return _skipped("ingest", ws)
    with console.status("loading the base model's tokenizer (chunks are measured in its tokens)"):
        count_tokens = _token_counter(cfg)
    c = cfg.ingest
    with ws.stage("ingest", inputs, config) as run, _progress(console) as progress:
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
                embed=_embedder() if c.dedup and c.semantic_dup_threshold is not None else None,
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
        report = {
            "documents": out.document_count,
            "chunks": out.chunk_count,
            "skipped": [{"path": s.path, "reason": s.reason} for s in out.skipped]
            + [{"path": source, "reason": f"filtered: {reason}"} for source, reason in out.filtered],
            "cleaning": out.cleaning,
            "pii": out.cleaning.get("pii", {}),
            "formats": out.formats,
            "duplicates": [asdict(c) for c in out.clusters],
            "datasets": {"documents": docs_v.ref, "chunks": chunks_v.ref},
        }
        (run.dir / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        run.counts.update(documents=out.document_count, chunks=out.chunk_count, skipped=len(report["skipped"]))
        run.counts.update(pii_redacted=sum(report["pii"].values()), duplicates_dropped=_dropped(out.clusters))
        run.counts.update(documents_dataset=docs_v.ref, chunks_dataset=chunks_v.ref)
    return {**_done("ingest", ws), "report": report}


def _token_counter(cfg: ProjectConfig):
    """Token counts by the base model's tokenizer, so chunks fit the model that will read them."""
    from hangjia.models import load_tokenizer, resolve_base

    tokenizer = load_tokenizer(resolve_base(_original_base(cfg)))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _original_base(cfg: ProjectConfig) -> str:
    """The base model before any stage of ours: what `pretrain` continued from, when training starts there."""
    return cfg.pretrain.base_model if cfg.train.base_model == PRETRAINED_BASE else cfg.train.base_model


def _embedder():
    """Unit vectors of texts, for semantic dedup."""
    from hangjia.models import load_embedder

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
    )


def datasets(ws: Workspace) -> DatasetStore:
    return DatasetStore(ws.root / "datasets")


def _table(rows: Iterable[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows))


def _ingested(ws: Workspace, name: str) -> list[dict[str, Any]]:
    """Rows of the dataset version (documents or chunks) that the last ingest produced."""
    manifest = ws.require("ingest", "`hangjia ingest`")
    return datasets(ws).resolve(manifest["counts"][f"{name}_dataset"]).read().to_pylist()


def index(ws: Workspace, console: Console, force: bool = False) -> dict[str, Any]:
    """BM25 over the ingested chunks, for retrieval-augmented answers."""
    from hangjia.data.chunk import Chunk
    from hangjia.rag.index import BM25Index

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"]}
    if not force and ws.is_current("index", inputs, {}):
        return _skipped("index", ws)
    with ws.stage("index", inputs, {}) as run:
        # BM25 needs every chunk's terms in memory anyway: this is the index's own memory, not ingest's.
        chunks = [Chunk.from_dict(r) for r in _ingested(ws, "chunks")]
        with console.status(f"indexing {len(chunks)} chunks"):
            BM25Index.build(chunks).save(run.dir)
        run.counts.update(chunks=len(chunks))
    return _done("index", ws)


def synth(
    ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False, dry_run: bool = False
) -> dict[str, Any]:
    """Question/answer pairs from the configured generators, each grounded in its passage, decontaminated."""
    from hangjia.data.chunk import Chunk
    from hangjia.data.documents import Document
    from hangjia.data.generate import needs_teacher, run_generators
    from hangjia.data.report import write_report

    upstream = ws.require("ingest", "`hangjia ingest`")
    inputs = {"ingest": upstream["fingerprint"], **_file_inputs(cfg)}
    config = {**cfg.synth.model_dump(mode="json"), "rag_top_k": cfg.rag.top_k}
    if needs_teacher(cfg):
        config["teacher"] = cfg.teacher.model_dump()
    if dry_run:
        return _dry_run(ws, cfg, console)
    if not force and ws.is_current("synth", inputs, config):
        return _skipped("synth", ws)
    documents = [Document.from_dict(r) for r in _ingested(ws, "documents")]
    chunks = [Chunk.from_dict(r) for r in _ingested(ws, "chunks")]
    teacher = _teacher(ws, cfg, console) if needs_teacher(cfg) else None
    with ws.stage("synth", inputs, config) as run, console.status("synthesizing") as status:
        pairs, drops = run_generators(
            cfg,
            documents,
            chunks,
            teacher=teacher,
            search=_searcher(ws),
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
    return {**_done("synth", ws), "summary": summary}


def _file_inputs(cfg: ProjectConfig) -> dict[str, str]:
    """Hashes of the files synth reads besides the ingested data, so editing one re-runs it."""
    files = {"eval_questions": cfg.eval.questions if cfg.synth.decontaminate else None}
    files["seed_tasks"] = cfg.synth.seed_tasks if "self_instruct" in cfg.synth.generators else None
    files.update({f"triples:{p.name}": p for p in cfg.synth.triples})
    files.update({f"import:{p.name}": p for p in cfg.synth.imports})
    return {k: sha256_file(Path(p)) for k, p in files.items() if p is not None and Path(p).is_file()}


def _teacher(ws: Workspace, cfg: ProjectConfig, console: Console):
    """The configured teacher behind the workspace's response cache (a rerun costs nothing)."""
    from hangjia.data.teacher import make_teacher
    from hangjia.models import resolve_base

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
    from hangjia.data.chunk import Chunk
    from hangjia.data.selfqa import questions_prompt

    if "self_qa" not in cfg.synth.generators:
        raise HangjiaError("--dry-run estimates the teacher's cost; no teacher generator (self_qa) is configured.")
    chunks = [Chunk.from_dict(r) for r in _ingested(ws, "chunks")]
    teacher = _teacher(ws, cfg, console)
    # Step 1 of Self-QA (questions per chunk); step 2 (one answer per question) is estimated from it.
    requests = [questions_prompt(c, cfg.synth.questions_per_chunk) for c in chunks]
    estimate = teacher.estimate(requests, cfg.teacher.max_tokens).to_dict()
    return {"stage": "synth", "skipped": True, "counts": {"dry_run": estimate}, "dir": str(ws.stage_dir("synth"))}


def _searcher(ws: Workspace):
    """BM25 search over the indexed chunks, when the index stage has run (retrieval-aware generators need it)."""
    from hangjia.rag.index import BM25Index

    if ws.manifest("index") is None:
        return None
    index = BM25Index.load(ws.stage_dir("index"))
    return lambda query, k: [chunk for chunk, _ in index.search(query, k)]


def _decontaminate(pairs: list, cfg: ProjectConfig) -> tuple[list, int]:
    """Drop pairs that overlap the evaluation questions (when decontamination is on and questions are set)."""
    from hangjia.data.dedup import decontaminate
    from hangjia.eval.qa import load_questions

    if not cfg.synth.decontaminate or cfg.eval.questions is None or not Path(cfg.eval.questions).is_file():
        return pairs, 0
    eval_texts = [q.question for q in load_questions(Path(cfg.eval.questions))]
    texts = [f"{p.question}\n{p.answer}" for p in pairs]
    bad = set(decontaminate(texts, eval_texts, n=cfg.synth.decontaminate_ngram))
    return [p for i, p in enumerate(pairs) if i not in bad], len(bad)


def select(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Dedup, score, diversify and budget the pairs; add paraphrases, retrieval-aware and general examples; split."""
    from hangjia.data.curate import curate
    from hangjia.data.formats import export_pairs
    from hangjia.data.report import write_report
    from hangjia.data.synth import QAPair

    upstream = ws.require("synth", "`hangjia synth`")
    index = ws.manifest("index") or {}
    inputs = {"synth": upstream["fingerprint"], "index": index.get("fingerprint", "")}
    if cfg.select.general_prompts is not None:
        inputs["general_prompts"] = sha256_file(Path(cfg.select.general_prompts))
    config = {**cfg.select.model_dump(mode="json"), "base_model": cfg.train.base_model, "rag_top_k": cfg.rag.top_k}
    if not force and ws.is_current("select", inputs, config):
        return _skipped("select", ws)
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
    return {**_done("select", ws), "summary": summary}


def _selection_parts(ws: Workspace, cfg: ProjectConfig, pairs: list, status) -> dict[str, Any]:
    """The model-dependent pieces of selection: embedder, quality scorer, derived examples, general pairs."""
    from hangjia.data.chunk import Chunk
    from hangjia.models import load_causal_lm, load_tokenizer, resolve_base

    c = cfg.select
    embedder = _embedder() if (c.dedup and c.semantic_dup_threshold is not None) or c.diversity == "kcenter" else None
    base_dir = resolve_base(cfg.train.base_model, ws.root)
    model = tokenizer = None
    if c.quality != "none":
        status.update("loading the base model")
        model, tokenizer = load_causal_lm(base_dir), load_tokenizer(base_dir)

    def score(candidates: list) -> list[float]:
        from hangjia.data.select import ifd_scores, one_shot_gains

        rows = [(p.user_turn(), p.answer) for p in candidates]
        if c.quality == "ifd":
            status.update(f"scoring {len(rows)} pairs by IFD")
            return ifd_scores(model, tokenizer, rows, batch_size=32)
        anchors = random.Random(c.seed).sample(rows, min(c.nuggets_anchors, len(rows)))
        status.update(f"scoring {len(rows)} pairs by one-shot gain on {len(anchors)} anchors")
        return one_shot_gains(model, tokenizer, rows, anchors, batch_size=32)

    search = _searcher(ws)
    chunks = {r["id"]: Chunk.from_dict(r) for r in _ingested(ws, "chunks")} if c.raft else {}

    def derive(selected: list) -> tuple[list, dict[str, Counter]]:
        from hangjia.data.paraphrase import paraphrase_pairs
        from hangjia.data.raft import raft_examples

        made, drops = [], {}
        if c.paraphrases:
            status.update(f"paraphrasing {len(selected)} questions")
            extra, drops["paraphrase"] = paraphrase_pairs(selected, per_question=c.paraphrases, seed=c.seed)
            made += extra
        if c.raft:
            if search is None:
                raise HangjiaError(
                    "Retrieval-aware examples need the index; run `hangjia index` (or set select.raft: false)."
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
        from hangjia.data.general import load_general_prompts, self_distilled
        from hangjia.data.teacher import CachedTeacher, LocalTeacher

        prompts = load_general_prompts(c.general_prompts)
        status.update(f"the base model answers {len(prompts)} general prompts (forgetting guard)")
        base = CachedTeacher(LocalTeacher(base_dir, batch_size=16), ws.root / "cache" / "teacher.sqlite")
        general = self_distilled(prompts, base)
    return {
        "embed": embedder,
        "score": score if c.quality != "none" else None,
        "derive": derive if c.paraphrases or c.raft else None,
        "general": general,
    }


def train(
    ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False, resume: bool = False
) -> dict[str, Any]:
    """LoRA SFT of the base model on the selected pairs (loss on answers only).

    With train.save_steps, checkpoints stay in the staging folder when a run dies (even by kill -9), and
    `resume` continues from the newest one, provided the inputs and config are those of the run that died."""
    import time

    from hangjia.models import resolve_base
    from hangjia.train.distributed import run_distributed

    upstream = ws.require("select", "`hangjia select`")
    inputs = {"select": upstream["fingerprint"]}
    if cfg.train.accelerate_config is not None and Path(cfg.train.accelerate_config).is_file():
        inputs["accelerate_config"] = sha256_file(Path(cfg.train.accelerate_config))
    config = cfg.train.model_dump(mode="json")
    if cfg.train.base_model == PRETRAINED_BASE:
        inputs["pretrain"] = ws.require("pretrain", "`hangjia pretrain`")["fingerprint"]
    if not force and not resume and ws.is_current("train", inputs, config):
        return _skipped("train", ws)
    with console.status("preparing the base model"):
        base_dir = resolve_base(cfg.train.base_model, ws.root)
    train_pairs, val_pairs = _selected_pairs(ws)
    args = _sft_args(cfg, resume=resume)
    keep = cfg.train.save_steps > 0
    with ws.stage("train", inputs, config, keep_partial=keep, resume=resume) as run, _progress(console) as progress:
        task = progress.add_task("train", total=None, status="")
        started, first = time.time(), None

        def on_step(step: int, total: int, logs: dict[str, float]) -> None:
            nonlocal first
            first = step - 1 if first is None else first  # a resumed run starts past 0
            rate = (step - first) * cfg.train.batch_size / max(time.time() - started, 1e-9)
            status = f"loss {logs['loss']:.3f}  lr {logs.get('learning_rate', 0):.2e}  {rate:.2f} samples/s"
            progress.update(task, completed=step, total=total, status=status)

        metrics = run_distributed(
            cfg.train.nproc,
            base_dir,
            train_pairs,
            val_pairs,
            run.dir,
            args,
            on_step=on_step,
            accelerate_config=cfg.train.accelerate_config,
        )
        (run.dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        run.counts.update(metrics)
    return _done("train", ws)


def _selected_pairs(ws: Workspace) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(user turn, answer) pairs of the select stage's train and val splits."""
    src = ws.stage_dir("select")
    return tuple(
        [(r.get("prompt") or r["question"], r["answer"]) for r in read_jsonl(src / f"{split}.jsonl")]
        for split in ("train", "val")
    )


def _sft_args(cfg: ProjectConfig, resume: bool = False):
    """LoraSFTArgs from the train section, less the settings that say how to launch rather than what to train."""
    from hangjia.train.sft import LoraSFTArgs

    launch = {"base_model", "nproc", "accelerate_config"}
    args = LoraSFTArgs(**{k: v for k, v in cfg.train.model_dump().items() if k not in launch}, resume=resume)
    args.packing = args.packing and args.method in ("lora", "full")  # virtual tokens would fall outside the mask
    return args


def tune(ws: Workspace, cfg: ProjectConfig, console: Console) -> dict[str, Any]:
    """Search learning rate, LoRA rank/alpha and epochs for the lowest validation loss (Optuna, median pruning).

    Trials, results.csv and best.yaml go to WORKSPACE/tune; a rerun continues the study there, keeping the trials
    that finished. Not a stage other stages read: paste best.yaml's train section into hangjia.yaml, then train."""
    from hangjia.models import resolve_base
    from hangjia.train.hpo import SearchSpace, current_params
    from hangjia.train.hpo import tune as run_tune

    ws.require("select", "`hangjia select`")
    with console.status("preparing the base model"):
        base_dir = resolve_base(cfg.train.base_model, ws.root)
    train_pairs, val_pairs = _selected_pairs(ws)
    t = cfg.tune
    space = SearchSpace(
        learning_rate=t.learning_rate, lora_r=t.lora_r, lora_alpha_ratio=t.lora_alpha_ratio, epochs=t.epochs
    )
    args = _sft_args(cfg)
    out_dir = ws.stage_dir("tune")
    with _progress(console) as progress:
        task = progress.add_task("tune", total=t.n_trials, status="")

        def on_step(trial: int, step: int, total: int) -> None:
            progress.update(task, status=f"trial {trial}: step {step}/{total}")

        def on_trial(row: dict[str, Any]) -> None:
            progress.advance(task)
            value = "" if row["value"] is None else f" val loss {row['value']:.4f}"
            console.print(
                f"trial {row['trial']} {row['state']}{value} (lr {row['learning_rate']:.2e}, r {row['lora_r']}, "
                f"alpha {row['lora_alpha']}, epochs {row['epochs']:g}, {row['steps']} steps)"
            )

        result = run_tune(
            base_dir,
            train_pairs,
            val_pairs,
            out_dir,
            args,
            space=space,
            n_trials=t.n_trials,
            seed=t.seed,
            timeout_s=t.timeout_s,
            prune_after_trials=t.prune_after_trials,
            prune_warmup_steps=t.prune_warmup_steps,
            enqueue=[current_params(args, space)] if t.baseline else [],
            base_model=cfg.train.base_model,
            on_trial=on_trial,
            on_step=on_step,
        )
    states = [row["state"] for row in result.rows]
    counts = {
        "trials": len(result.rows),
        "ran_now": result.ran,
        "complete": states.count("complete"),
        "pruned": states.count("pruned"),
        "best_trial": result.best_trial,
        "best_val_loss": result.best_value,
    }
    return {"stage": "tune", "skipped": result.ran == 0, "dir": str(out_dir), "counts": counts}


def build(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> list[dict[str, Any]]:
    """All stages in order; evaluation only when questions are configured."""
    results = [ingest(ws, cfg, console, force), index(ws, console, force)]
    results.append(synth(ws, cfg, console, force))
    results.append(select(ws, cfg, console, force))
    results.append(train(ws, cfg, console, force))
    if cfg.eval.questions is not None:
        from hangjia.eval_stage import evaluate

        results.append(evaluate(ws, cfg, console, force))
    return results
