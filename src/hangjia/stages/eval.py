"""`hangjia eval`: base vs tuned (vs production, when eval.production is set) × RAG off/on on the domain questions,
multiple-choice sets by log-likelihood, retrieval recall, held-out perplexity, an optional judge; results.json,
answers.jsonl and the report; and the gate over those results.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import read_jsonl, write_jsonl
from hangjia.core.workspace import Workspace, sha256_file, sha256_tree
from hangjia.stages.ingest import ingested
from hangjia.stages.reporting import done, progress_bar, skipped


def evaluate(ws: Workspace, cfg: ProjectConfig, console: Console, force: bool = False) -> dict[str, Any]:
    """Base vs tuned (vs production, when eval.production is set), RAG off vs on, on cfg.eval.questions."""
    from hangjia.eval.qa import conditions, evaluate, load_questions
    from hangjia.eval.report import write_eval_report
    from hangjia.eval.retrieval import recall_at_k
    from hangjia.llm.generation import Engine
    from hangjia.llm.weights import checked_model_folder

    if cfg.eval.questions is None:
        raise HangjiaError("No questions to evaluate; pass --questions FILE or set eval.questions in hangjia.yaml.")
    questions_path = Path(cfg.eval.questions)
    questions = load_questions(questions_path, cfg.eval.limit)
    inputs = {
        "questions": sha256_file(questions_path),
        "train": (ws.manifest("train") or {}).get("fingerprint", ""),
        "index": (ws.manifest("index") or {}).get("fingerprint", ""),
    }
    for path in [cfg.eval.mcq, *cfg.eval.general]:
        if path is not None:
            inputs[f"choices:{Path(path).name}"] = sha256_file(_existing(Path(path)))
    if cfg.eval.general_shots:
        from hangjia.eval.mcq import dev_file_for

        for path in cfg.eval.general:
            dev = dev_file_for(Path(path))
            inputs[f"shots:{dev.parent.parent.name}/{dev.name}"] = sha256_file(dev)
    production = None
    if cfg.eval.production is not None:
        production = checked_model_folder(Path(cfg.eval.production).expanduser().resolve())
        inputs["production"] = sha256_tree(production)
    # eval.models joins the fingerprint only when set, so workspaces evaluated before it existed stay current.
    settings = cfg.eval.model_dump(exclude={"models"} if cfg.eval.models is None else None)
    config = {**settings, **cfg.rag.model_dump(), "base_model": cfg.train.base_model}
    if not force and ws.is_current("eval", inputs, config):
        return skipped("eval", ws)
    with console.status("loading models"):
        engine = Engine.from_workspace(ws, cfg.train.base_model, cfg.rag.top_k, production)
    names = _models(engine, cfg)
    measured = [(name, rag) for name, rag in conditions(engine) if name in names]
    with ws.stage("eval", inputs, config) as run, progress_bar(console) as progress:
        total = len(questions) * len(measured)
        task = progress.add_task("eval", total=total, status="")
        clock = _Clock()
        results = evaluate(
            engine,
            questions,
            cfg.eval.max_new_tokens,
            batch_size=cfg.eval.batch_size,
            on_batch=lambda n: progress.update(task, advance=n),
            guard=engine.guard(cfg.rag.guard),
            only=measured,
        )
        clock.lap("questions")
        results["choices"] = _multiple_choice(engine, names, cfg, lambda text: progress.update(task, status=text))
        clock.lap("multiple choice")
        if engine.index is not None:
            answerable = [q for q in questions if q.type != "unanswerable"]
            results["retrieval"] = recall_at_k(engine.index, answerable, ks=sorted({1, cfg.rag.top_k, 5}))
            clock.lap("retrieval")
        if cfg.eval.judge is not None:
            progress.update(task, status=f"the judge grades {len(results['answers'])} answers")
            _judge(ws, cfg, results)
            clock.lap("judge")
        perplexities = _heldout_perplexity(ws, engine, names, cfg)
        if perplexities:
            results["perplexity"] = perplexities
            clock.lap("perplexity")
        results["seconds"] = clock.laps
        answers = results.pop("answers")
        write_jsonl(run.dir / "answers.jsonl", answers)
        (run.dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        write_eval_report(run.dir, results, answers, title="Hangjia evaluation")
        run.counts.update({f"{c['model']}{'+rag' if c['rag'] else ''}": c["accuracy"] for c in results["conditions"]})
    return done("eval", ws)


def _models(engine, cfg: ProjectConfig) -> list[str]:
    """The engine's models that eval.models asks for (all of them when it is not set)."""
    if cfg.eval.models is None:
        return list(engine.model_names)
    missing = [name for name in cfg.eval.models if name not in engine.model_names]
    if missing:
        raise HangjiaError(
            f"eval.models names {', '.join(missing)}, which this workspace does not have (it has: "
            f"{', '.join(engine.model_names)}); train first, set eval.production, or drop the name."
        )
    return [name for name in engine.model_names if name in cfg.eval.models]


class _Clock:
    """Seconds spent in each part of the stage, so the report can say what evaluation costs."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 1)
        self._last = now


def gate(ws: Workspace, cfg: ProjectConfig):
    """The gate over the stored results (changing a threshold does not regenerate answers): its verdict, also written
    to eval/gate.json and into the report."""
    from hangjia.eval.gate import check_gate
    from hangjia.eval.report import write_eval_report

    d = ws.stage_dir("eval")
    ws.require("eval", "`hangjia eval`")
    results = json.loads((d / "results.json").read_text(encoding="utf-8"))
    verdict = check_gate(results, cfg.gate)
    (d / "gate.json").write_text(json.dumps(verdict.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    answers = read_jsonl(d / "answers.jsonl")
    write_eval_report(d, {**results, "gate": verdict.to_dict()}, answers, title="Hangjia evaluation")
    return verdict


def _judge(ws: Workspace, cfg: ProjectConfig, results: dict[str, Any]) -> None:
    """Add the judge's verdict to every answer row and its accuracy to every condition."""
    from hangjia.eval.judge import judge_answers, summarize_verdicts
    from hangjia.llm.teacher import make_teacher

    j = cfg.eval.judge
    judge = make_teacher(
        kind="endpoint",
        model=j.model,
        base_url=j.base_url,
        api_key_env=j.api_key_env,
        concurrency=j.concurrency,
        max_retries=j.max_retries,
        timeout_s=j.timeout_s,
        cache_path=ws.root / "cache" / "judge.sqlite",
    )
    answers = results["answers"]
    for row, verdict in zip(answers, judge_answers(judge, answers), strict=True):
        row["judge"] = verdict
    verdicts = summarize_verdicts(answers)
    for condition in results["conditions"]:
        condition.update(verdicts[(condition["model"], condition["rag"])])


def _heldout_perplexity(ws: Workspace, engine, names: list[str], cfg: ProjectConfig) -> dict[str, float] | None:
    """Each model's perplexity on chunks no training pair came from: those of select's val and test splits."""
    if not cfg.eval.perplexity_chunks or not ws.manifest("select"):
        return None
    from hangjia.eval.perplexity import perplexity

    ids = {
        split: {r.get("chunk_id") for r in read_jsonl(ws.stage_dir("select") / f"{split}.jsonl")}
        for split in ("train", "val", "test")
    }
    held = (ids["val"] | ids["test"]) - ids["train"] - {None, ""}
    texts = [c["text"] for c in ingested(ws, "chunks") if c["id"] in held][: cfg.eval.perplexity_chunks]
    if not texts:
        return None
    out = {}
    for name in names:
        with engine.using(name) as model:
            out[name] = round(perplexity(model, engine.tokenizer, texts, max_length=512, stride=256), 3)
    return out


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise HangjiaError(f"Evaluation file {path} does not exist; fix eval.mcq / eval.general in hangjia.yaml.")
    return path


def _multiple_choice(engine, names: list[str], cfg: ProjectConfig, status) -> list[dict[str, Any]]:
    """Domain MCQ (0-shot) and general-knowledge sets (MMLU, CMMLU, C-Eval; `eval.general_shots` solved questions
    from each subject's dev file) by log-likelihood, for each of the models `names`."""
    from hangjia.eval.mcq import dev_file_for, evaluate_mcq, load_mcq_csv, load_mcq_jsonl

    sets = []  # (name, items, shots, dev items)
    if cfg.eval.mcq is not None:
        sets.append(("domain mcq", load_mcq_jsonl(Path(cfg.eval.mcq)), 0, []))
    shots = cfg.eval.general_shots
    for path in cfg.eval.general:
        items = load_mcq_csv(Path(path))[: cfg.eval.general_limit]
        dev = load_mcq_csv(dev_file_for(Path(path))) if shots else []
        sets.append((f"general: {items[0].subject}", items, shots, dev))
    rows = []
    for set_name, items, k, dev in sets:
        for name in names:
            status(f"{set_name} · {name}")
            with engine.using(name) as model:
                scored = evaluate_mcq(model, engine.tokenizer, items, k, dev, batch_size=cfg.eval.batch_size)
            rows.append(
                {"set": set_name, "model": name, "shots": k, **{key: scored[key] for key in ("acc", "acc_norm", "n")}}
            )
    return rows
