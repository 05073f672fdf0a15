"""The closed loop on kestrel, scripted as users would act (issue 23): does feedback make a better model, and does the
gate stop a bad batch?

    python benchmarks/feedback_loop.py --built WS --workspace NEW --corrections right   # the loop
    python benchmarks/feedback_loop.py --built WS --workspace NEW2 --corrections wrong  # a batch of wrong ones

WS is a workspace `hangjia build -c configs/kestrel.yaml` made (its registry holds domain@1 as production). Steps:

1. WS is copied to NEW; the config is kestrel's plus general-knowledge retention (MMLU anatomy, eval.general) checked
   by the retrain gate (retrain.gate.max_retention_drop 2 points).
2. `hangjia serve` runs; 8 users ask kestrel's 80 questions through the official `openai` client; each answer is
   scored as eval scores it (eval/scoring.py).
3. Corrections go to /v1/feedback, as a user would type them:
   right   every wrongly answered question gets its reference answer, citing the shown passage that holds it
           ("drain pump blocked [1]"; "The documents do not say." for an unanswerable one);
   wrong   every answerable question gets another question's reference answer (a confident, wrong batch: the
           right answers "corrected" too).
   A reviewer accepts all of them (app/review.py's decide, what `hangjia review accept` runs).
4. `hangjia retrain` trains the candidate, evaluates it against production with the gate and promotes it or not.
5. Held-out rewordings of the 80 questions (examples/kestrel/questions_reworded.jsonl, never trained on) are answered
   by the workspace's domain model (the candidate) and by production before the loop (domain@1), with RAG and the
   answer guard as served: accuracy on the rewordings of the corrected questions and of the others.
   `--heldout-only N` runs this step alone on a workspace where the loop ran, against domain@N.

Prints a summary and writes it as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from openai import OpenAI
from serving.run import Server, free_port

from hangjia.app.db.engine import database_url
from hangjia.app.db.models import User
from hangjia.app.exchanges import ExchangeStore
from hangjia.app.registry import PRODUCTION, Registry
from hangjia.app.review import decide
from hangjia.core.jsonl import read_jsonl
from hangjia.eval.scoring import is_correct, matches

REPO = Path(__file__).resolve().parents[1]
KESTREL = REPO / "examples" / "kestrel"
CONFIG = REPO / "configs" / "kestrel.yaml"
RETENTION = REPO.parent / "shared" / "benchmarks" / "mmlu" / "test" / "anatomy_test.csv"
USERS = 8
REVIEWER = "rita"
NOT_SAID = "The documents do not say."


def loop_config(workspace: Path, production: Path | None = None, questions: Path | None = None) -> Path:
    """kestrel.yaml with absolute paths, retention measured and gated; `production`/`questions` for the held-out
    evaluation."""
    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["docs"] = str((CONFIG.parent / raw["docs"]).resolve())
    raw["eval"]["questions"] = str((questions or (CONFIG.parent / raw["eval"]["questions"])).resolve())
    raw["eval"]["mcq"] = str((CONFIG.parent / raw["eval"]["mcq"]).resolve())
    raw["eval"]["general"] = [str(RETENTION)]
    raw["retrain"] = {"gate": {"reference": PRODUCTION, "min_domain_gain_rag": -2.5, "min_mcq_gain": -7.0}}
    raw["retrain"]["gate"]["max_retention_drop"] = 2.0
    if production is not None:
        raw["eval"]["production"] = str(production)
    path = workspace / ("hangjia.yaml" if production is None else "heldout.yaml")
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def hangjia(*args: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    print("$ hangjia " + " ".join(args), flush=True)
    run = subprocess.run([sys.executable, "-m", "hangjia", *args], capture_output=True, text=True)
    print(run.stdout[-6000:], run.stderr[-2000:] if run.returncode not in (0, 1) else "", flush=True)
    print(f"  exit {run.returncode} after {time.monotonic() - started:.0f} s", flush=True)
    return run


def ask_all(url: str, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each question asked once by one of USERS users through the openai client: the answer, its exchange id and the
    passages shown, scored."""
    client = OpenAI(base_url=url, api_key="unused", timeout=600)

    def ask(i: int) -> dict[str, Any]:
        q = questions[i]
        reply = client.chat.completions.create(
            model="domain",
            messages=[{"role": "user", "content": q["question"]}],
            temperature=0,
            max_tokens=64,
            user=f"user{i % USERS}",
        )
        extra = reply.model_extra or {}
        answer = reply.choices[0].message.content or ""
        return {
            "id": q["id"],
            "answer": answer,
            "version": reply.model,
            "exchange_id": extra.get("exchange_id"),
            "passages": [p.get("text", "") for p in extra.get("citations") or []],
            "correct": is_correct(answer, q["answer"], q.get("aliases", []), q["type"]),
        }

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(ask, range(len(questions))))


def right_correction(q: dict[str, Any], passages: list[str]) -> str:
    """The reference answer as a user who checked the documents writes it: citing the passage that holds it."""
    if q["type"] == "unanswerable":
        return NOT_SAID
    cited = [i + 1 for i, p in enumerate(passages) if matches(p, q["answer"], q.get("aliases", []))]
    return q["answer"] + (f" [{cited[0]}]" if cited else "")


def corrections(
    questions: list[dict[str, Any]], asked: list[dict[str, Any]], kind: str, seed: int = 0
) -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(question, what was asked, the correction) for each question the batch corrects."""
    pairs = list(zip(questions, asked, strict=True))
    if kind == "right":
        return [(q, a, right_correction(q, a["passages"])) for q, a in pairs if not a["correct"]]
    answerable = [(q, a) for q, a in pairs if q["type"] != "unanswerable"]
    others = [q["answer"] for q, _ in answerable]
    rng = random.Random(seed)
    made = []
    for q, a in answerable:
        wrong = rng.choice([o for o in others if not matches(o, q["answer"], q.get("aliases", []))])
        made.append((q, a, wrong + " [1]"))
    return made


def heldout(workspace: Path, config: Path, production_weights: Path, corrected: set[str]) -> dict[str, Any]:
    """The candidate (the workspace's domain model) and production (the model before) with RAG and the answer guard,
    as served, on the rewordings: accuracy on the rewordings of the corrected questions and of the others."""
    from hangjia.core.config import load_config
    from hangjia.core.workspace import Workspace
    from hangjia.eval.qa import evaluate, load_questions
    from hangjia.llm.generation import Engine

    cfg = load_config(config)
    questions = load_questions(KESTREL / "questions_reworded.jsonl")
    engine = Engine.from_workspace(Workspace(workspace), cfg.train.base_model, cfg.rag.top_k, production_weights)
    started = time.monotonic()
    rows = evaluate(
        engine,
        questions,
        cfg.eval.max_new_tokens,
        cfg.eval.batch_size,
        guard=engine.guard(cfg.rag.guard),
        only=[("domain", True), (PRODUCTION, True)],
    )["answers"]
    table: dict[str, Any] = {"seconds": round(time.monotonic() - started)}
    for model in ("domain", PRODUCTION):
        mine = [r for r in rows if r["model"] == model]
        parts = {
            "corrected": [r for r in mine if r["id"].removesuffix("r") in corrected],
            "others": [r for r in mine if r["id"].removesuffix("r") not in corrected],
            "all": mine,
        }
        table[model] = {
            name: {"correct": sum(r["correct"] for r in part), "n": len(part)} for name, part in parts.items()
        }
    return table


def corrected_ids(url: str, questions: list[dict[str, Any]]) -> set[str]:
    """The ids of the questions whose answers got an accepted correction (from the database)."""
    from sqlalchemy import select

    from hangjia.app.db.models import Exchange, Feedback

    by_text = {q["question"]: q["id"] for q in questions}
    store = ExchangeStore(url)
    try:
        with store.sessions() as session:
            fixed = session.scalars(
                select(Exchange)
                .join(Feedback, Feedback.exchange_id == Exchange.id)
                .where(Feedback.kind == "correction")
            )
            return {by_text[e.messages[-1]["content"]] for e in fixed if e.messages[-1]["content"] in by_text}
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--built", type=Path, required=True, help="A workspace built with configs/kestrel.yaml.")
    parser.add_argument("--workspace", type=Path, required=True, help="Where to copy it and run the loop.")
    parser.add_argument("--corrections", choices=("right", "wrong"), default="right")
    parser.add_argument("--out", type=Path, help="Write the summary here (JSON).")
    parser.add_argument("--skip-heldout", action="store_true", help="Do not evaluate the held-out rewordings.")
    parser.add_argument(
        "--heldout-only",
        type=int,
        metavar="N",
        help="Only evaluate the rewordings in --workspace, where the loop ran, against domain@N (the model before).",
    )
    args = parser.parse_args()
    started = time.monotonic()
    ws = args.workspace.resolve()
    if args.heldout_only is not None:
        url = database_url(None, ws)
        with Registry(url, ws) as registry:
            before = registry.weights(registry.version(args.heldout_only))
        corrected = corrected_ids(url, read_jsonl(KESTREL / "questions.jsonl"))
        result = {"corrected": sorted(corrected), "heldout": heldout(ws, ws / "hangjia.yaml", before, corrected)}
        print(json.dumps(result, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return
    if ws.exists():
        shutil.rmtree(ws)
    shutil.copytree(args.built.resolve(), ws, ignore=shutil.ignore_patterns(".staging", "retrain"))
    config = loop_config(ws)
    url = database_url(None, ws)
    with Registry(url, ws) as registry:
        before = registry.aliases()[PRODUCTION].version
        production_weights = registry.weights(registry.version(before))
    questions = read_jsonl(KESTREL / "questions.jsonl")

    port = free_port()
    command = [sys.executable, "-m", "hangjia", "serve", "-w", str(ws), "-c", str(config), "--port", str(port)]
    server = Server("hangjia", command, port, "/ready", ws / "serve.log")
    server.start()
    try:
        asked = ask_all(server.base_url, questions)
        batch = corrections(questions, asked, args.corrections)
        client = OpenAI(base_url=server.base_url, api_key="unused")
        ids = []
        for _, a, text in batch:
            made = client.post(
                "/feedback",
                body={"exchange_id": a["exchange_id"], "kind": "correction", "corrected_answer": text, "user": "uma"},
                cast_to=object,
            )
            ids.append(made["id"])
    finally:
        server.stop()
    right_before = sum(a["correct"] for a in asked)
    print(f"served domain@{before}: {right_before}/{len(asked)} right; {len(batch)} corrections ({args.corrections})")

    store = ExchangeStore(url)
    try:
        with store.sessions.begin() as session:
            session.add(User(username=REVIEWER, password_hash="!", role="reviewer"))
        with store.sessions.begin() as session:
            for feedback_id in ids:
                decide(session, feedback_id, REVIEWER, "accepted")
    finally:
        store.close()

    retrained = hangjia("retrain", "-w", str(ws), "-c", str(config), "--by", REVIEWER)
    reports = sorted((ws / "retrain").glob("*.json"))
    report = json.loads(reports[-1].read_text(encoding="utf-8")) if reports else None
    with Registry(url, ws) as registry:
        after = registry.aliases()[PRODUCTION].version
    summary: dict[str, Any] = {
        "corrections": args.corrections,
        "served": {"version": f"domain@{before}", "right": right_before, "n": len(asked)},
        "corrected": [q["id"] for q, _, _ in batch],
        "examples": [{"id": q["id"], "answer": a["answer"], "correction": t} for q, a, t in batch[:5]],
        "retrain_exit": retrained.returncode,
        "retrain": report,
        "production": {"before": before, "after": after},
    }
    if not args.skip_heldout:
        summary["heldout"] = heldout(ws, config, production_weights, set(summary["corrected"]))
    summary["seconds"] = round(time.monotonic() - started)
    print(json.dumps({k: v for k, v in summary.items() if k != "retrain"}, indent=2, ensure_ascii=False))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
