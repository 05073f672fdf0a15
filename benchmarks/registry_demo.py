"""Issue 22's "Done when", shown on a workspace: lineage, an A/B test decided by users' thumbs, promote, rollback and
drift, each step as the `hangjia ...` command it runs and what that printed.

    python benchmarks/registry_demo.py --workspace WS -c WS/hangjia.yaml --out registry_demo.json

WS is a kestrel workspace whose registry (WS/hangjia.db) holds domain@1 and domain@2 (`hangjia build`, then
`hangjia retrain`); nothing is trained here. The registry's aliases are moved (and left where step 5 puts them). Steps:

1. Lineage: `hangjia registry ls`, `registry show 2`, `registry diff 1 2`.
2. A/B setup: `registry promote 1` (production) and `registry promote 2 --alias candidate` (each says "nothing
   moved" when the alias is there already); `hangjia serve` with the config plus
   `serve: {ab: {model: domain, candidate: domain@candidate, share: 0.5}}`, written beside it (hangjia-ab.yaml).
3. Simulated users: 120 users (`user` "sim-N") each ask 1-2 questions drawn (seeded) from
   examples/kestrel/questions_reworded.jsonl through the official `openai` client (model `domain`, temperature 0,
   max_tokens 64, 4 threads). The reply's `model` names the version that answered. Scripted preferences favour the
   new version: thumbs up with probability 0.75 when domain@2 answered, 0.40 when domain@1 did (seeded), posted to
   /v1/feedback. Beside them, honestly: the share of each version's answers that are correct (eval/scoring.py).
4. The server stops; `hangjia ab report` (and its --json), then `ab report --act`, which promotes domain@2 to
   production when it is significantly better; `registry history` shows the move.
5. `registry rollback`: production back to the version before; `registry ls` and `history` again.
6. Drift: `hangjia drift -q` on 60 ARC-Easy questions (grade-school science, off kestrel's domain: expect exit 3)
   and on the kestrel rewordings (expect exit 0), each with --chart and --json. The reference is drift.reference,
   by default the training split's synthesised questions, which are worded unlike people's (config.py's
   DriftConfig): the rewordings may drift on the embedding signal against it, so they are tested once more
   against kestrel's 80 written questions (--reference), what a baseline of real questions would be. Then
   `drift --from-db --days 1` on the served answers (those of step 3 and any others of the last day).
7. The summary (--out, JSON): each step's command and exit code, the A/B counts and thumbs-up rates per version,
   the report's p-values and verdict, the drift signals and the chart paths.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from feedback_loop import hangjia
from openai import OpenAI
from serving.run import Server, free_port

from hangjia.core.jsonl import read_jsonl, write_jsonl
from hangjia.eval.scoring import is_correct

REPO = Path(__file__).resolve().parents[1]
REWORDED = REPO / "examples" / "kestrel" / "questions_reworded.jsonl"
WRITTEN = REPO / "examples" / "kestrel" / "questions.jsonl"
ARC_EASY = REPO.parent / "shared" / "benchmarks" / "arc" / "ARC-Easy-Test.jsonl"
USERS = 120
ARC_QUESTIONS = 60
THUMBS_UP = {"new": 0.75, "old": 0.40}  # the scripted users' chance of a thumbs up, by the version that answered


class Demo:
    """The workspace, its two configs and the record of every command run."""

    def __init__(self, workspace: Path, config: Path, old: int, new: int, out: Path):
        self.ws, self.config, self.old, self.new, self.out = workspace, config, old, new, out
        self.ab_config = config.parent / "hangjia-ab.yaml"
        self.steps: dict[str, list[dict[str, Any]]] = {}

    def run(self, step: str, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        """`hangjia ARGS -w WS -c CONFIG`, printed with its output (feedback_loop's printer) and recorded."""
        args = (*args, "-w", str(self.ws), "-c", str(config or self.config))
        done = hangjia(*args)
        self.steps.setdefault(step, []).append({"command": "hangjia " + " ".join(args), "exit": done.returncode})
        return done

    def beside_out(self, suffix: str) -> Path:
        return self.out.with_name(self.out.stem + suffix)


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def lineage(demo: Demo) -> None:
    banner("1. Lineage")
    demo.run("lineage", "registry", "ls")
    demo.run("lineage", "registry", "show", str(demo.new))
    demo.run("lineage", "registry", "diff", str(demo.old), str(demo.new))


def setup_ab(demo: Demo) -> None:
    """Production on the old version, candidate on the new one, and the A/B config beside the given one."""
    banner(f"2. A/B setup: production domain@{demo.old}, candidate domain@{demo.new}")
    demo.run("ab_setup", "registry", "promote", str(demo.old), "--note", "registry-demo:A/B-control")
    demo.run(
        "ab_setup",
        "registry",
        "promote",
        str(demo.new),
        "--alias",
        "candidate",
        "--note",
        "registry-demo:A/B-candidate",
    )
    raw = yaml.safe_load(demo.config.read_text(encoding="utf-8")) or {}
    raw.setdefault("serve", {})["ab"] = {"model": "domain", "candidate": "domain@candidate", "share": 0.5}
    demo.ab_config.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False), encoding="utf-8")
    print(f"wrote {demo.ab_config} (the config plus serve.ab: domain vs domain@candidate, share 0.5)")


def plan(seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(user, question) for each request: USERS users, each asking 1-2 distinct rewordings (seeded)."""
    questions = read_jsonl(REWORDED)
    rng = random.Random(seed)
    return [(f"sim-{u}", q) for u in range(USERS) for q in rng.sample(questions, rng.choice((1, 2)))]


def simulate(demo: Demo, seed: int) -> dict[str, Any]:
    """Serve with the A/B split, ask as the simulated users, post their scripted thumbs; per version: answers,
    thumbs up, correct answers."""
    banner("3. Simulated users")
    port = free_port()
    command = ["serve", "-w", str(demo.ws), "-c", str(demo.ab_config), "--port", str(port)]
    print("$ hangjia " + " ".join(command), flush=True)
    demo.steps["serve"] = [{"command": "hangjia " + " ".join(command), "log": str(demo.ws / "serve-ab.log")}]
    server = Server("hangjia", [sys.executable, "-m", "hangjia", *command], port, "/ready", demo.ws / "serve-ab.log")
    server.start()
    print(f"  ready after {server.start_s:.0f} s", flush=True)
    requests = plan(seed)
    try:
        client = OpenAI(base_url=server.base_url, api_key="unused", timeout=600)

        def ask(item: tuple[str, dict[str, Any]]) -> dict[str, Any]:
            user, q = item
            reply = client.chat.completions.create(
                model="domain",
                messages=[{"role": "user", "content": q["question"]}],
                temperature=0,
                max_tokens=64,
                user=user,
            )
            answer = reply.choices[0].message.content or ""
            return {
                "user": user,
                "id": q["id"],
                "version": reply.model,
                "exchange_id": (reply.model_extra or {}).get("exchange_id"),
                "correct": is_correct(answer, q["answer"], q.get("aliases", []), q["type"]),
            }

        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            asked = list(pool.map(ask, requests))
        print(f"  {len(asked)} questions from {USERS} users in {time.monotonic() - started:.0f} s", flush=True)
        rng = random.Random(seed + 1)
        for a in asked:  # in the plan's order, so the seeded thumbs do not depend on the threads
            side = "new" if a["version"] == f"domain@{demo.new}" else "old"
            a["thumbs"] = rng.random() < THUMBS_UP[side]
            body = {"exchange_id": a["exchange_id"], "kind": "thumbs", "thumbs": a["thumbs"], "user": a["user"]}
            if not a["thumbs"]:
                body["reason"] = "wrong"
            client.post("/feedback", body=body, cast_to=object)
    finally:
        server.stop()
    per_version: dict[str, Any] = {}
    for version in sorted({a["version"] for a in asked}):
        mine = [a for a in asked if a["version"] == version]
        per_version[version] = {
            "answers": len(mine),
            "users": len({a["user"] for a in mine}),
            "thumbs_up": sum(a["thumbs"] for a in mine),
            "thumbs_up_rate": round(sum(a["thumbs"] for a in mine) / len(mine), 3),
            "correct": sum(a["correct"] for a in mine),
            "correct_rate": round(sum(a["correct"] for a in mine) / len(mine), 3),
        }
    print(f"  {'version':<12}{'answers':>8}{'users':>7}{'thumbs up (scripted)':>24}{'correct (scored)':>20}")
    for version, v in per_version.items():
        up = f"{v['thumbs_up']} ({v['thumbs_up_rate']:.0%})"
        right = f"{v['correct']} ({v['correct_rate']:.0%})"
        print(f"  {version:<12}{v['answers']:>8}{v['users']:>7}{up:>24}{right:>20}")
    return {"users": USERS, "questions": len(asked), "per_version": per_version}


def ab_report(demo: Demo) -> dict[str, Any]:
    """The A/B report (its JSON kept), then --act, and the alias history."""
    banner("4. A/B report and --act")
    report_json = demo.beside_out("-ab.json")
    demo.run("ab_report", "ab", "report", "--json", str(report_json), config=demo.ab_config)
    report = json.loads(report_json.read_text(encoding="utf-8")) if report_json.exists() else None
    acted = demo.run("ab_report", "ab", "report", "--act", config=demo.ab_config)
    demo.run("ab_report", "registry", "history")
    found: dict[str, Any] = {"report_json": str(report_json), "act_output": acted.stdout.strip().splitlines()[-1:]}
    if report:
        found |= {
            "versions": report["versions"],
            "arms": {a["version"]: {"answers": a["exchanges"], "thumbs_up": a["thumbs_up"]} for a in report["arms"]},
            "p_values": report["p_values"],
            "significant": report["significant"],
            "verdict": report["verdict"],
        }
    return found


def rollback(demo: Demo) -> None:
    banner("5. Rollback")
    demo.run("rollback", "registry", "rollback", "--note", "registry-demo:back-to-the-version-before")
    demo.run("rollback", "registry", "ls")
    demo.run("rollback", "registry", "history")


def arc_questions(folder: Path, seed: int) -> Path:
    """ARC_QUESTIONS ARC-Easy test questions (seeded), their stems as JSONL with a `question` field."""
    rows = read_jsonl(ARC_EASY)
    picked = random.Random(seed).sample(rows, ARC_QUESTIONS)
    path = folder / "arc_easy_60.jsonl"
    write_jsonl(path, [{"id": r["id"], "question": r["question"]["stem"]} for r in picked])
    return path


def drift(demo: Demo, seed: int) -> dict[str, Any]:
    """Drift on a shifted set (ARC), on an unshifted one (the rewordings) and on the served exchanges."""
    banner("6. Drift")
    folder = Path(tempfile.mkdtemp(prefix="registry-demo-"))
    arc = arc_questions(folder, seed)
    print(f"{ARC_QUESTIONS} ARC-Easy questions written to {arc}")
    found: dict[str, Any] = {}
    runs = (
        ("arc_easy", arc, None, 3),
        ("kestrel_reworded", REWORDED, None, 0),
        ("kestrel_reworded_vs_written", REWORDED, WRITTEN, 0),
    )
    for name, questions, reference, expected in runs:
        chart, report = demo.beside_out(f"-drift-{name}.png"), demo.beside_out(f"-drift-{name}.json")
        extra = ("--reference", str(reference)) if reference else ()
        done = demo.run("drift", "drift", "-q", str(questions), *extra, "--chart", str(chart), "--json", str(report))
        found[name] = {"questions": str(questions), "reference": str(reference) if reference else "drift.reference"}
        found[name] |= {"exit": done.returncode, "expected_exit": expected}
        found[name] |= signals(report) | {"chart": str(chart) if chart.exists() else None}
    report = demo.beside_out("-drift-served.json")
    done = demo.run("drift", "drift", "--from-db", "--days", "1", "--json", str(report))
    found["served"] = {"exit": done.returncode} | signals(report)
    return found


def signals(report: Path) -> dict[str, Any]:
    """What a drift report's JSON says, in brief (nothing when it was not written)."""
    if not report.exists():
        return {}
    data = json.loads(report.read_text(encoding="utf-8"))
    return {
        "drifted": data["drifted"],
        "recent_questions": data["recent_questions"],
        "reference_questions": data["reference_questions"],
        "signals": {
            s["name"]: {k: s.get(k) for k in ("value", "reference", "p_value", "drifted", "n")} for s in data["signals"]
        },
        "report": str(report),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", "-w", type=Path, required=True, help="Its registry holds both versions.")
    parser.add_argument("--config", "-c", type=Path, required=True, help="The workspace's hangjia.yaml.")
    parser.add_argument("--out", type=Path, required=True, help="The summary (JSON); reports and charts beside it.")
    parser.add_argument("--old", type=int, default=1, help="The version production serves in the A/B test.")
    parser.add_argument("--new", type=int, default=2, help="The candidate version.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("COLUMNS", "160")  # the CLI's tables, as wide as a terminal would show them
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    demo = Demo(args.workspace.resolve(), args.config.resolve(), args.old, args.new, out)
    started = time.monotonic()

    lineage(demo)
    setup_ab(demo)
    served = simulate(demo, args.seed)
    ab = ab_report(demo)
    rollback(demo)
    drifted = drift(demo, args.seed)

    summary = {
        "workspace": str(demo.ws),
        "versions": {"old": f"domain@{demo.old}", "new": f"domain@{demo.new}"},
        "ab_config": str(demo.ab_config),
        "scripted_thumbs_up": {f"domain@{demo.new}": THUMBS_UP["new"], f"domain@{demo.old}": THUMBS_UP["old"]},
        "served": served,
        "ab_report": ab,
        "drift": drifted,
        "steps": demo.steps,
        "seconds": round(time.monotonic() - started),
    }
    banner("7. Summary")
    print(json.dumps({k: v for k, v in summary.items() if k != "steps"}, indent=2, ensure_ascii=False))
    out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
