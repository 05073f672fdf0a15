"""The pipeline's commands: init, ingest, synth, select, train, pretrain, dpo, reward, export, tune, eval, drift
and build (all of them in order)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.markup import escape
from rich.table import Table

from hangjia.cli.options import ConfigOpt, DocsOpt, EngineOpt, ForceOpt, QuestionsOpt, WorkspaceOpt, _setup
from hangjia.cli.registry import _register_build
from hangjia.cli.root import _fmt, _pct, app, console, out
from hangjia.core.config import GgufType, config_template
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace


def _summary(results: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("output")
    table.add_column("counts")
    for r in results:
        counts = ", ".join(f"{k}={_fmt(v)}" for k, v in r["counts"].items() if not isinstance(v, dict))
        table.add_row(r["stage"], "unchanged, skipped" if r["skipped"] else "done", r["dir"], counts)
    out.print(table)
    for r in results:
        if "report" in r:
            _ingest_report(r["report"])
        if "summary" in r:  # synth and select: examples per generator, drops per reason
            from hangjia.instruct.report import print_summary

            print_summary(out, r["summary"])
            out.print(f"report: {Path(r['dir']) / 'report.html'}")


def _ingest_report(report: dict[str, Any]) -> None:
    """What ingest did to the documents, in words: formats, PII removed, duplicates, skips with reasons."""
    formats = ", ".join(f"{n} {fmt}" for fmt, n in sorted(report["formats"].items()))
    out.print(f"loaded {report['documents']} documents ({formats}) → {report['chunks']} chunks")
    if report.get("pii"):
        out.print("redacted PII: " + ", ".join(f"{n} {kind}" for kind, n in sorted(report["pii"].items())))
    _kept_contacts(report.get("pii_kept", []), report.get("pii_keep_rules", {}))
    cleaning = report.get("cleaning") or {}
    if cleaning:
        out.print(
            f"cleaning: {cleaning.get('documents_changed', 0)} documents changed, "
            f"{cleaning.get('header_footer_lines', 0)} repeated header/footer lines and "
            f"{cleaning.get('boilerplate_lines', 0)} boilerplate lines dropped"
        )
    for cluster in report.get("duplicates", []):
        dropped = ", ".join(m for m in cluster["members"] if m != cluster["kept"])
        out.print(
            f"[cyan]{cluster['kind']} duplicate[/] kept {cluster['kept']}, dropped {dropped} "
            f"(similarity {cluster['similarity']:.2f}; {cluster['reason']})"
        )
    for skip in report["skipped"]:
        out.print(f"[yellow]skipped[/] {skip['path']}: {skip['reason']}")


def _kept_contacts(kept: list[dict[str, Any]], why: dict[str, str], shown: int = 8) -> None:
    """The published contacts ingest left in the text, by the rule that kept them, `shown` values a rule."""
    if not kept:
        return
    out.print(f"kept {len(kept)} published contacts ({sum(k['count'] for k in kept)} mentions) as not personal:")
    for rule in sorted({k["rule"] for k in kept}):
        values = [f"{k['value']} ×{k['count']}" if k["count"] > 1 else k["value"] for k in kept if k["rule"] == rule]
        more = f", … {len(values) - shown} more (ingest/report.json)" if len(values) > shown else ""
        line = f"  [green]{rule}[/]: {', '.join(values[:shown])}{more} [dim]({why.get(rule, '')})[/]"  # no "[" in them
        out.print(line, highlight=False, soft_wrap=True)


@app.command()
def init(
    workspace: Annotated[Path, typer.Argument(help="Folder to create.")],
    docs: DocsOpt = None,
) -> None:
    """Create a workspace with a commented hangjia.yaml holding every setting at its default."""
    ws = Workspace(workspace)
    ws.root.mkdir(parents=True, exist_ok=True)
    if ws.config_path.exists():
        raise HangjiaError(f"{ws.config_path} already exists; edit it, or pick a new folder.")
    text = config_template()
    if docs is not None:
        text = text.replace("docs: null", f"docs: {docs.expanduser().resolve()}")
    ws.config_path.write_text(text, encoding="utf-8")
    out.print(f"Created {ws.config_path}. Next: hangjia build --workspace {ws.root}" + ("" if docs else " --docs DIR"))


@app.command()
def ingest(
    workspace: WorkspaceOpt,
    docs: DocsOpt = None,
    config: ConfigOpt = None,
    engine: EngineOpt = None,
    force: ForceOpt = False,
) -> None:
    """Load a folder of documents (txt, md, html, json, jsonl, csv), chunk them, and build the BM25 index."""
    from hangjia.stages.index import index as run_index
    from hangjia.stages.ingest import ingest as run_ingest

    ws, cfg = _setup(workspace, config, docs, engine)
    _summary([run_ingest(ws, cfg, console, force), run_index(ws, cfg, console, force)], "ingest")


@app.command()
def synth(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Estimate the teacher's requests, tokens and cost; send nothing.")
    ] = False,
) -> None:
    """Generate grounded question/answer pairs from the ingested chunks (synth.generators; report.html)."""
    from hangjia.stages.synth import synth as run_synth

    ws, cfg = _setup(workspace, config)
    result = run_synth(ws, cfg, console, force, dry_run=dry_run)
    if dry_run:
        estimate = result["counts"]["dry_run"]
        out.print("dry run, nothing sent: " + ", ".join(f"{k}={_fmt(v)}" for k, v in estimate.items()))
        return
    _summary([result], "synth")


@app.command()
def select(workspace: WorkspaceOpt, config: ConfigOpt = None, force: ForceOpt = False) -> None:
    """Pick the training pairs: dedup, quality, diversity to a budget, derived and general examples, splits."""
    from hangjia.stages.select import select as run_select

    ws, cfg = _setup(workspace, config)
    _summary([run_select(ws, cfg, console, force)], "select")


@app.command()
def train(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    max_steps: Annotated[int | None, typer.Option(help="Override train.max_steps.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Override train.epochs.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a crashed run from its newest checkpoint (train.save_steps).")
    ] = False,
    nproc: Annotated[
        int | None, typer.Option("--nproc", min=1, help="Data-parallel processes (train.batch_size is split).")
    ] = None,
    accelerate_config: Annotated[
        Path | None,
        typer.Option("--accelerate-config", help="Launch with this accelerate config (deploy/distributed/)."),
    ] = None,
) -> None:
    """LoRA fine-tune the base model on the selected pairs; the adapter becomes model `domain`."""
    from hangjia.stages.train import train as run_train

    ws, cfg = _setup(workspace, config)
    if max_steps is not None:
        cfg.train.max_steps = max_steps
    if epochs is not None:
        cfg.train.epochs = epochs
    if nproc is not None:
        cfg.train.nproc = nproc
    if accelerate_config is not None:
        cfg.train.accelerate_config = accelerate_config.expanduser().resolve()
    _summary([run_train(ws, cfg, console, force, resume=resume)], "train")


@app.command()
def pretrain(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    force: ForceOpt = False,
    max_steps: Annotated[int | None, typer.Option(help="Override pretrain.max_steps.")] = None,
) -> None:
    """Continue pretraining the base model on the ingested documents (with general-text replay).

    Writes WORKSPACE/pretrain/model; set train.base_model: pretrain to fine-tune it. Prints held-out perplexity
    before and after."""
    from hangjia.stages.pretrain import pretrain as run_pretrain

    ws, cfg = _setup(workspace, config)
    if max_steps is not None:
        cfg.pretrain.max_steps = max_steps
    _summary([run_pretrain(ws, cfg, console, force)], "pretrain")


PreferencesOpt = Annotated[
    Path | None, typer.Option("--preferences", help="JSONL of question/chosen/rejected (overrides preference.file).")
]
PreferenceStepsOpt = Annotated[int | None, typer.Option(help="Override preference.max_steps.")]


def _preference_setup(workspace: Path, config: Path | None, preferences: Path | None, max_steps: int | None):
    ws, cfg = _setup(workspace, config)
    if preferences is not None:
        cfg.preference.file = preferences.expanduser().resolve()
    if max_steps is not None:
        cfg.preference.max_steps = max_steps
    return ws, cfg


@app.command()
def dpo(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    preferences: PreferencesOpt = None,
    force: ForceOpt = False,
    max_steps: PreferenceStepsOpt = None,
) -> None:
    """DPO on the SFT adapter: preference pairs from a file, or the domain model's own wrong answers to its
    training questions (rejected) against the reference answers (chosen). The result becomes model `domain`."""
    from hangjia.stages.preference import dpo as run_dpo

    ws, cfg = _preference_setup(workspace, config, preferences, max_steps)
    _summary([run_dpo(ws, cfg, console, force)], "dpo")


@app.command()
def reward(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    preferences: PreferencesOpt = None,
    force: ForceOpt = False,
    max_steps: PreferenceStepsOpt = None,
) -> None:
    """Train a pairwise reward model (LoRA + score head) on preference pairs; WORKSPACE/reward/reward_model."""
    from hangjia.stages.preference import reward as run_reward

    ws, cfg = _preference_setup(workspace, config, preferences, max_steps)
    _summary([run_reward(ws, cfg, console, force)], "reward")


@app.command()
def export(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    formats: Annotated[
        str, typer.Option("--formats", help=f"GGUF types to write, comma-separated: {', '.join(get_args(GgufType))}.")
    ] = "f16,q8_0",
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Compare llama.cpp's greedy output with transformers'.")
    ] = True,
    force: ForceOpt = False,
) -> None:
    """Merge the `domain` model into its base and write GGUF files (f16, q8_0, q4_0, q4_k_m) that llama.cpp runs;
    WORKSPACE/export. The q4 types come from llama.cpp's quantizer, run on the f16 file.

    --verify (the default; needs the export extra, `pip install 'hangjia\\[export]'`) decodes three prompts, as
    chat turns, greedily with llama.cpp and with transformers and counts the prompts and tokens that agree."""
    from hangjia.stages.export import export as run_export

    ws, cfg = _setup(workspace, config)
    wanted = tuple(f.strip() for f in formats.split(",") if f.strip())
    _summary([run_export(ws, cfg, console, wanted, verify, force)], "export")


@app.command()
def tune(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    n_trials: Annotated[int | None, typer.Option(help="Override tune.n_trials.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Override tune.timeout_s (seconds).")] = None,
) -> None:
    """Search learning rate, LoRA rank/alpha and epochs for the lowest validation loss; writes WORKSPACE/tune/best.yaml.

    Rerun to continue an interrupted search; finished trials are kept. Delete WORKSPACE/tune to start over."""
    import optuna

    from hangjia.stages.tune import tune as run_tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial lines replace its INFO log
    ws, cfg = _setup(workspace, config)
    if n_trials is not None:
        cfg.tune.n_trials = n_trials
    if timeout is not None:
        cfg.tune.timeout_s = timeout
    _summary([run_tune(ws, cfg, console)], "tune")
    out.print(f"best config: {ws.stage_dir('tune') / 'best.yaml'} (paste its train: section into hangjia.yaml)")


@app.command(name="eval")
def eval_(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    questions: QuestionsOpt = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    production: Annotated[
        Path | None,
        typer.Option(
            help="The model in service (an adapter or model folder): evaluated as a third model, `production`; "
            "with gate.reference: production the gate compares the candidate with it."
        ),
    ] = None,
    force: ForceOpt = False,
    gate: Annotated[
        bool, typer.Option("--gate", help="Check the gate: rules; exit 1 when the candidate fails them, 2 on misuse.")
    ] = False,
) -> None:
    """Score base vs tuned (vs production), RAG off vs on, on a questions.jsonl; print the table; write
    report.html/.md/.json."""
    from hangjia.stages.eval import evaluate as run_evaluate

    ws, cfg = _setup(workspace, config)
    if questions is not None:
        cfg.eval.questions = questions.expanduser().resolve()
    if limit is not None:
        cfg.eval.limit = limit
    if production is not None:
        cfg.eval.production = production.expanduser().resolve()
    _summary([run_evaluate(ws, cfg, console, force)], "eval")
    print_eval_table(ws)
    if gate:
        raise typer.Exit(_gate(ws, cfg))


def _gate(ws: Workspace, cfg) -> int:
    """Print the gate's checks over the stored results; its exit code."""
    from hangjia.stages.eval import gate

    verdict = gate(ws, cfg)
    table = Table(title=f"gate: {verdict.candidate} vs {verdict.reference}", title_justify="left")
    for col in ("check", "value", "threshold", "result", "why"):
        table.add_column(col)
    for c in verdict.checks:
        value = "—" if c.value is None else f"{c.value:.1f}"
        table.add_row(c.name, value, f"{c.threshold:g}", "pass" if c.passed else "[red]FAIL[/]", c.message)
    out.print(table)
    out.print("gate passed" if verdict.passed else "[red]gate failed[/]: the candidate is not better")
    return verdict.exit_code


def print_eval_table(ws: Workspace) -> None:
    results = json.loads((ws.stage_dir("eval") / "results.json").read_text())
    conds = results["conditions"]
    types = sorted({t for c in conds for t in c["by_type"]})
    table = Table(title=f"Domain QA accuracy ({conds[0]['total']} questions)", title_justify="left")
    for col in ["model", "RAG", "accuracy", "F1", "ROUGE-L", *types, "refusal", "false abstentions"]:
        table.add_column(col, justify="left" if col in ("model", "RAG") else "right")
    for c in conds:
        cells = [f"{c['by_type'].get(t, 0) * 100:.1f}" for t in types]
        scores = [_pct(c.get(k)) for k in ("accuracy", "f1", "rouge_l")]
        refusal = _pct(c.get("refusal_accuracy"))
        table.add_row(c["model"], "on" if c["rag"] else "off", *scores, *cells, refusal, str(c["false_abstentions"]))
    out.print(table)
    if results.get("retrieval"):
        overall = results["retrieval"]["overall"]
        recalls = ", ".join(f"{k}={v * 100:.1f}" for k, v in overall.items() if k.startswith("recall@"))
        out.print(f"retrieval over {overall['n']} answerable questions: {recalls}, MRR={overall['mrr']:.3f}")
    if results.get("choices"):
        choices = Table(title="Multiple choice, 0-shot log-likelihood (chance: 25%)", title_justify="left")
        for col in ("set", "model", "items", "acc", "acc_norm"):
            choices.add_column(col, justify="left" if col in ("set", "model") else "right")
        for row in results["choices"]:
            acc, norm = f"{row['acc'] * 100:.1f}", f"{row['acc_norm'] * 100:.1f}"
            choices.add_row(row["set"], row["model"], str(row["n"]), acc, norm)
        out.print(choices)
    out.print(f"answers: {ws.stage_dir('eval') / 'answers.jsonl'}; report: {ws.stage_dir('eval') / 'report.html'}")


@app.command()
def drift(
    workspace: WorkspaceOpt,
    questions: Annotated[
        Path | None,
        typer.Option("--questions", "-q", help="Recent questions: JSONL with a `question` field, or text, one a line."),
    ] = None,
    config: ConfigOpt = None,
    from_db: Annotated[
        bool,
        typer.Option(
            "--from-db", help="Take the recent questions and exchanges (with their thumbs) from the served answers."
        ),
    ] = False,
    days: Annotated[
        float | None, typer.Option(help="With --from-db: only the answers of the last DAYS days (default: all).")
    ] = None,
    exchanges: Annotated[
        Path | None,
        typer.Option(help="Served exchanges JSONL (question, answer, abstained, thumbs, created_at) for the rates."),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Reference questions (overrides drift.reference; default: the select stage's training split)."
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
    chart: Annotated[Path | None, typer.Option(help="Write the chart (PNG) here.")] = None,
    prom: Annotated[
        Path | None, typer.Option(help="Write Prometheus gauges here (node_exporter textfile collector).")
    ] = None,
) -> None:
    """Compare recent questions with the training questions and the documents: embedding distance (MMD, permutation
    test), out-of-domain share (best BM25 score below the reference's 5th percentile) and, with --exchanges, rising
    abstentions and thumbs down. Exit 0: no drift; 3: a signal past its threshold (`drift:` in hangjia.yaml);
    2: misuse."""
    from hangjia.eval.drift import chart as drift_chart
    from hangjia.eval.drift import write_prom
    from hangjia.stages.drift import drift as run_drift

    ws, cfg = _setup(workspace, config)
    if (questions is None) == (not from_db):
        raise HangjiaError(
            "Give the recent questions with --questions FILE, or take them from the served answers "
            "with --from-db (not both)."
        )
    with tempfile.TemporaryDirectory() as tmp:
        if from_db:
            questions, exchanges = _served_for_drift(ws, cfg, days, Path(tmp))
        report = run_drift(ws, cfg, console, questions, exchanges, reference)
    _print_drift(report)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if chart is not None:
        from hangjia.core.reports import png

        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_bytes(png(drift_chart(report)))
    if prom is not None:
        write_prom(report, prom)
    written = ", ".join(str(p) for p in (json_out, chart, prom) if p is not None)
    out.print(("[red]drift detected[/]" if report.drifted else "no drift") + (f"; wrote {written}" if written else ""))
    raise typer.Exit(report.exit_code)


def _print_drift(report) -> None:
    """The drift report as a table: one row per signal."""
    table = Table(
        title=f"drift: {report.recent_count} recent vs {report.reference_count} reference questions "
        f"({report.representation} vectors)",
        title_justify="left",
    )
    for col in ("signal", "value", "reference", "p-value", "threshold", "verdict", "n", "note"):
        table.add_column(col, justify="right" if col in ("value", "reference", "p-value", "n") else "left")
    for s in report.signals:
        verdict = "[red]DRIFT[/]" if s.drifted else ("not tested" if s.p_value is None else "ok")
        table.add_row(
            s.name,
            _num(s.value),
            _num(s.reference),
            "—" if s.p_value is None else f"{s.p_value:.3g}",
            escape(s.threshold),
            verdict,
            str(s.n),
            escape(s.note),
        )
    out.print(table)


def _served_for_drift(ws, cfg, days: float | None, folder: Path) -> tuple[Path, Path]:
    """The database's exchanges written where `hangjia drift` reads them: questions.jsonl and exchanges.jsonl."""
    from datetime import UTC, datetime, timedelta

    from hangjia.app.db.engine import database_url
    from hangjia.app.db.schema import current
    from hangjia.app.exchanges import ExchangeStore, write_drift_inputs

    url = database_url(cfg.database.url, ws.root)
    if current(url) is None:
        raise HangjiaError(f"No served answers in {ws.root}: the database is empty (`hangjia serve` records them).")
    since = None if days is None else datetime.now(UTC) - timedelta(days=days)
    store = ExchangeStore(url)
    try:
        n = write_drift_inputs(store, since, folder / "questions.jsonl", folder / "exchanges.jsonl")
    finally:
        store.close()
    if n == 0:
        raise HangjiaError(
            "The database holds no served answers" + ("" if days is None else f" from the last {days:g} days") + "."
        )
    console.print(f"{n} served answers from the database")
    return folder / "questions.jsonl", folder / "exchanges.jsonl"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


@app.command()
def build(
    workspace: WorkspaceOpt,
    docs: DocsOpt = None,
    config: ConfigOpt = None,
    questions: QuestionsOpt = None,
    engine: EngineOpt = None,
    force: ForceOpt = False,
) -> None:
    """Run every stage in order: ingest, index, synth, select, train, eval (eval when questions are set); then
    register the model as `domain@candidate`, and as `domain@production` when there is none yet and the gate passed
    (or no gate: rules are set)."""
    from hangjia.stages.build import build as run_build

    ws, cfg = _setup(workspace, config, docs, engine)
    if questions is not None:
        cfg.eval.questions = questions.expanduser().resolve()
    results = run_build(ws, cfg, console, force)
    _summary(results, f"build {ws.root}")
    if ws.manifest("eval") and cfg.eval.questions is not None:
        print_eval_table(ws)
    _register_build(ws, cfg)
    out.print(f"Serve it: hangjia serve --workspace {ws.root} --port {cfg.serve.port}")
