"""The `hangjia` command. Each subcommand is a plain function; its docstring is its --help."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hangjia import __version__
from hangjia.core.config import GgufType, ProjectConfig, config_template, load_config
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace

app = typer.Typer(
    help="Hangjia (行家): turn your documents into a domain-expert LLM you own, run and improve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()
if not out.is_terminal:  # logs and pipes get rich's 80 columns, which truncates the eval table
    out.width = max(out.width, 140)

WorkspaceOpt = Annotated[Path, typer.Option("--workspace", "-w", help="Project workspace folder.")]
DocsOpt = Annotated[Path | None, typer.Option("--docs", "-d", help="Folder of source documents.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="hangjia.yaml to use (default: WORKSPACE/hangjia.yaml if present)."),
]
EngineOpt = Annotated[
    str | None, typer.Option("--engine", help="Run the data stages `local` (in-process) or on `ray` (Ray Data).")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Re-run even if inputs and config are unchanged.")]
QuestionsOpt = Annotated[
    Path | None, typer.Option("--questions", "-q", help="questions.jsonl to evaluate on (overrides eval.questions).")
]


def _setup(
    workspace: Path, config: Path | None, docs: Path | None = None, engine: str | None = None
) -> tuple[Workspace, ProjectConfig]:
    ws = Workspace(workspace)
    if config is None and ws.config_path.is_file():
        config = ws.config_path
    cfg = load_config(config)
    if docs is not None:
        cfg.docs = docs.expanduser().resolve()
    if engine is not None:
        try:
            cfg.ingest.engine = engine
        except ValueError:
            raise HangjiaError(f"Unknown engine '{engine}'; use local or ray.") from None
    return ws, cfg


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


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}"


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


@app.command()
def serve(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default serve.host, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default serve.port, 8000).")] = None,
) -> None:
    """Serve `base`, `domain` (the registry's production version once there is one), `domain@N`, `domain@ALIAS` and
    serve.versions over an OpenAI-compatible API (/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings,
    /v1/feedback), the web app at / (sign in, chat with citations, feedback) and /metrics for Prometheus. Each name
    is generated by serve.backend (auto: llama.cpp where it can, else transformers); answers are recorded."""
    from hangjia.app.server import serve as run_server

    ws, cfg = _setup(workspace, config)
    serve_config = cfg.serve.model_copy(update={"host": host or cfg.serve.host, "port": port or cfg.serve.port})
    run_server(
        ws.root,
        cfg.train.base_model,
        serve_config,
        rag_top_k=cfg.rag.top_k,
        guard=cfg.rag.guard,
        database=cfg.database.url,
    )


@app.command()
def chat(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    model: Annotated[str, typer.Option(help="`domain` (tuned) or `base`.")] = "domain",
    rag: Annotated[
        bool | None, typer.Option("--rag/--no-rag", help="Retrieve passages (default: on for domain).")
    ] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.")] = 256,
    guard: Annotated[
        bool | None,
        typer.Option("--guard/--no-guard", help="The answer guard on RAG answers (default: rag.guard, on)."),
    ] = None,
) -> None:
    """Chat in the terminal with a workspace's model. Empty line or Ctrl-D quits. After each answer: the sources it
    cites ([n]), or, when it cites none, the passages retrieved for it (dim). With RAG, the answer guard says "The
    documents do not say." when the question names what no document mentions or the answer is not in the passages."""
    from hangjia.eval.scoring import abstains
    from hangjia.llm.generation import Engine, GenerationParams
    from hangjia.llm.languages import language_note, model_languages

    ws, cfg = _setup(workspace, config)
    served = _production(ws, cfg)
    with console.status("loading models"):
        engine = Engine.from_workspace(
            ws, cfg.train.base_model, cfg.rag.top_k, guard=cfg.rag.guard, domain=served[1] if served else None
        )
    engine.check_model(model)
    if served and model == "domain":
        console.print(f"[dim]domain is {served[0]}, the registry's production version[/]")
    use_rag = engine.default_rag(model) if rag is None else rag
    languages = model_languages(engine.base_dir, cfg.serve.languages)
    console.print(f"[bold]{model}[/] (RAG {'on' if use_rag else 'off'}) — empty line to quit")
    history: list[dict[str, str]] = []
    params = GenerationParams(max_new_tokens=max_tokens)
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            break
        if not line:
            break
        history.append({"role": "user", "content": line})
        note = language_note(line, model, engine.base_dir, languages)
        if note:
            console.print(f"[dim]note: {escape(note)}[/]")
        answer_guard = engine.guard(guard) if use_rag else None
        verdict = answer_guard.before(line) if answer_guard else None
        if verdict is not None and not verdict.passed:  # the documents cannot say: nothing to generate
            out.print(f"{model}> {answer_guard.reply(line)}")
            console.print(f"  [dim]guard: {escape(verdict.detail)}[/]")
            history.append({"role": "assistant", "content": answer_guard.reply(line)})
            continue
        citations, deltas, summary = engine.stream(history[-1:], model, params, use_rag)
        out.print(f"{model}> ", end="")
        for piece in deltas:
            out.print(piece, end="", soft_wrap=True)
        out.print()
        answer = summary.text
        if answer_guard is not None:
            verdict = answer_guard.after(line, answer, [c["text"] for c in citations], abstains(answer))
            if not verdict.passed:  # already on screen: say so, and keep the reply in the history
                answer = answer_guard.reply(line)
                console.print(f"  [yellow]guard: {escape(verdict.detail)} — {escape(answer)}[/]")
        _print_sources(citations, answer)
        history.append({"role": "assistant", "content": answer})


_SNIPPET_CHARS = 80  # one terminal line per source, with its place in front


def _print_sources(citations: list[dict], answer: str) -> None:
    """The passages the answer cites ([n] file · section/page "snippet"), else the retrieved ones dim under
    "retrieved:"."""
    from hangjia.core.citations import mark_cited

    marked = mark_cited(citations, [answer])
    cited = [c for c in marked if c["cited"]]
    shown, style = (cited, "") if cited else (marked, "dim")
    if not shown:
        return
    if not cited:
        console.print("  [dim]retrieved:[/]")
    for c in shown:
        where = " · ".join(p for p in (c["source"], c["section"] or "", _page(c)) if p)
        snippet = " ".join(c["text"].split())
        snippet = snippet if len(snippet) <= _SNIPPET_CHARS else snippet[: _SNIPPET_CHARS - 1] + "…"
        line = escape(f'[{c["index"]}] {where}  "{snippet}"')
        console.print(f"  [{style}]{line}[/]" if style else f"  {line}", soft_wrap=True)


def _page(citation: dict) -> str:
    """The page ("page 3") when the section title does not already say it (a PDF's sections are its pages)."""
    page = citation.get("page")
    return f"page {page}" if page is not None and citation["section"] != f"page {page}" else ""


@app.command()
def models(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """List the models a workspace serves: what each name means, where its weights live, how it was trained."""
    from hangjia.llm.models import EMBEDDED_NAME, cache_dir
    from hangjia.llm.weights import base_weights, domain_weights, production_weights

    ws, cfg = _setup(workspace, config)
    train = ws.manifest("train")
    spec = train["config"]["base_model"] if train else cfg.train.base_model
    table = Table(title=f"models in {ws.root}", title_justify="left")
    for col in ("name", "what", "where", "trained"):
        table.add_column(col)
    if spec == "embedded" and not (cache_dir() / EMBEDDED_NAME).exists():
        table.add_row("base", "base model (embedded)", f"{cache_dir() / EMBEDDED_NAME} (converted on first use)", "")
    else:
        try:
            where = str(base_weights(ws, cfg.train.base_model).base_dir)
        except HangjiaError as exc:  # e.g. base_model: pretrain before `hangjia pretrain` ran
            where = exc.message
        table.add_row("base", f"base model ({spec})", where, "")
    domain = domain_weights(ws, cfg.train.base_model)
    served = _production(ws, cfg)
    if served is not None:
        table.add_row("domain", f"{served[0]} (the registry's production version)", str(served[1]), "")
    if domain.tuned is None:
        table.add_row("domain", "not trained yet", f"run: hangjia build --workspace {ws.root}", "")
    else:
        stage = ws.manifest(domain.stage)
        c = stage["counts"]
        # SFT reports validation loss before and after; DPO its preference loss on the first and last step.
        before, after, what = ("val_loss_before", "val_loss_after", "val loss")
        if domain.stage == "dpo":
            before, after, what = ("first_loss", "final_loss", "DPO loss")
        trained = f"{domain.stage} {stage['started_at']}, {c.get('steps')} steps"
        trained += f", {what} {_fmt(c.get(before))} → {_fmt(c.get(after))}"
        table.add_row("workspace" if served else "domain", domain.kind, str(domain.tuned), trained)
    if cfg.eval.production is not None:
        production = production_weights(ws, cfg.train.base_model, cfg.eval.production)
        table.add_row("production", production.kind, str(production.tuned), "eval.production")
    out.print(table)


data_app = typer.Typer(help="Versioned datasets: list, show, diff, lineage.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _store(workspace: Path):
    from hangjia.corpus.datasets import DatasetStore

    return DatasetStore(Workspace(workspace).root / "datasets")


@data_app.command("ls")
def data_ls(workspace: WorkspaceOpt) -> None:
    """List every dataset and its versions, newest last."""
    store = _store(workspace)
    table = Table(title=f"datasets in {store.root}", title_justify="left")
    for col in ("dataset", "version", "rows", "stage", "parents", "created"):
        table.add_column(col)
    for name in store.names():
        for v in store.versions(name):
            parents = ", ".join(v.manifest["parents"])
            table.add_row(name, v.version, str(v.rows), v.manifest["stage"], parents, v.manifest["created_at"])
    out.print(table)


@data_app.command("show")
def data_show(
    workspace: WorkspaceOpt,
    ref: Annotated[str, typer.Argument(help="NAME, NAME@latest or NAME@VERSION (a prefix is enough).")],
    rows: Annotated[int, typer.Option(help="Sample rows to print.")] = 3,
) -> None:
    """Show a dataset version: manifest, column stats and sample rows."""
    version = _store(workspace).resolve(ref)
    manifest = {k: v for k, v in version.manifest.items() if k not in ("config",)}
    out.print_json(json.dumps(manifest, default=str))
    table = version.read()
    for row in table.slice(0, rows).to_pylist():
        shown = {k: (v[:200] + "…" if isinstance(v, str) and len(v) > 200 else v) for k, v in row.items()}
        out.print_json(json.dumps(shown, ensure_ascii=False, default=str))


@data_app.command("diff")
def data_diff(
    workspace: WorkspaceOpt,
    old: Annotated[str, typer.Argument(help="NAME@VERSION of the older dataset.")],
    new: Annotated[str, typer.Argument(help="NAME@VERSION of the newer dataset.")],
    key: Annotated[str | None, typer.Option(help="Column that identifies a row (default: id, else source).")] = None,
) -> None:
    """Rows added, removed and changed between two dataset versions."""
    from hangjia.corpus.datasets import diff

    store = _store(workspace)
    a, b = store.resolve(old).read(), store.resolve(new).read()
    key = key or ("id" if "id" in a.column_names else "source")
    if key not in a.column_names or key not in b.column_names:
        raise HangjiaError(f"Column '{key}' is not in both datasets; pass --key with one of {a.column_names}.")
    changes = diff(a, b, key)
    out.print(f"{old} → {new}: {a.num_rows} → {b.num_rows} rows")
    for kind in ("added", "removed", "changed"):
        keys = changes[kind]
        out.print(f"  {kind}: {len(keys)}" + (f"  e.g. {', '.join(map(str, keys[:5]))}" if keys else ""))


@data_app.command("lineage")
def data_lineage(
    workspace: WorkspaceOpt,
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to trace back to its source files.")],
) -> None:
    """Trace a dataset version back through its parents to the source files."""
    store = _store(workspace)
    for version in store.lineage(ref):
        out.print(f"{version.ref}  ({version.rows} rows, stage {version.manifest['stage'] or '-'})")
        for parent in version.manifest["parents"]:
            out.print(f"  ← {parent}")
    root = store.lineage(ref)[-1]
    if "source" in root.manifest["columns"]:
        table = root.read(columns=[c for c in ("source", "sha256") if c in root.manifest["columns"]])
        for row in sorted({tuple(r.values()) for r in table.to_pylist()}):
            out.print(f"  file {' sha256 '.join(row)}")


db_app = typer.Typer(
    help="The web app's database (users, conversations, feedback, reviews): its schema version.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


def _database_url(workspace: Path, config: Path | None) -> str:
    from hangjia.app.db.engine import database_url

    ws, cfg = _setup(workspace, config)
    return database_url(cfg.database.url, ws.root)


def _migrate(workspace: Path, config: Path | None, step: Any, revision: str) -> None:
    """Run schema.upgrade or schema.downgrade on the workspace's database; print its revision before → after."""
    from hangjia.app.db.engine import display_url
    from hangjia.app.db.schema import current

    url = _database_url(workspace, config)
    before = current(url)
    step(url, revision)
    out.print(escape(f"{display_url(url)}: {before or 'empty'} → {current(url) or 'empty'}"), soft_wrap=True)


@db_app.command("upgrade")
def db_upgrade(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    revision: Annotated[str, typer.Argument(help="Revision to reach (default: the newest).")] = "head",
) -> None:
    """Create or update the database's tables (database.url or $HANGJIA_DATABASE_URL, else WORKSPACE/hangjia.db)."""
    from hangjia.app.db.schema import upgrade

    _migrate(workspace, config, upgrade, revision)


@db_app.command("downgrade")
def db_downgrade(
    workspace: WorkspaceOpt,
    revision: Annotated[str, typer.Argument(help="Revision to go back to; `base` drops every table and its rows.")],
    config: ConfigOpt = None,
) -> None:
    """Take the database's tables back to an earlier revision (what later revisions added is dropped)."""
    from hangjia.app.db.schema import downgrade

    _migrate(workspace, config, downgrade, revision)


@db_app.command("current")
def db_current(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """Print the database's URL (password hidden), its revision and the newest one this Hangjia knows."""
    from hangjia.app.db.engine import display_url
    from hangjia.app.db.schema import current, head

    url = _database_url(workspace, config)
    now = current(url) or "empty (run: hangjia db upgrade)"
    out.print(escape(f"{display_url(url)}: {now} (newest: {head()})"), soft_wrap=True)


users_app = typer.Typer(
    help="Who may sign in to the web app (`hangjia serve` at /) and with which role: user, reviewer, admin.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")
UserArg = Annotated[str, typer.Argument(help="The user's name (what they type to sign in).")]
PasswordStdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin (scripts).")
]


def _accounts(workspace: Path, config: Path | None):
    """The workspace database's users, its tables created or updated first."""
    from hangjia.app.auth import Accounts
    from hangjia.app.db.schema import upgrade

    url = _database_url(workspace, config)
    upgrade(url)
    return Accounts.open(url)


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return typer.prompt("Password", hide_input=True, confirmation_prompt=True)


def _change(workspace: Path, config: Path | None, change: str, *args: Any) -> None:
    accounts = _accounts(workspace, config)
    try:
        getattr(accounts, change)(*args)
    finally:
        accounts.close()


@users_app.command("add")
def users_add(
    name: UserArg,
    workspace: WorkspaceOpt,
    role: Annotated[str, typer.Option("--role", help="user, reviewer (the review queue too) or admin.")] = "user",
    password_stdin: PasswordStdinOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Add a user who signs in with a password (asked twice; at least 8 characters)."""
    _change(workspace, config, "add", name, _new_password(password_stdin), role)
    out.print(escape(f"Added {name} ({role})."))


@users_app.command("passwd")
def users_passwd(
    name: UserArg, workspace: WorkspaceOpt, password_stdin: PasswordStdinOpt = False, config: ConfigOpt = None
) -> None:
    """Set a user's password (their other sessions end); an API user made by a request's `user` can then sign in."""
    _change(workspace, config, "set_password", name, _new_password(password_stdin))
    out.print(escape(f"Password of {name} set."))


@users_app.command("role")
def users_role(
    name: UserArg,
    role: Annotated[str, typer.Argument(help="user, reviewer or admin.")],
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
) -> None:
    """Give a user another role (at their next request)."""
    _change(workspace, config, "set_role", name, role)
    out.print(escape(f"{name} is now {role}."))


@users_app.command("deactivate")
def users_deactivate(name: UserArg, workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """Stop a user signing in; their sessions end at their next request. Their feedback stays."""
    _change(workspace, config, "set_active", name, False)
    out.print(escape(f"{name} can no longer sign in."))


@users_app.command("ls")
def users_ls(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """List the users: role, whether they can sign in, since when."""
    from hangjia.app.auth import can_sign_in

    accounts = _accounts(workspace, config)
    try:
        users = accounts.list()
    finally:
        accounts.close()
    table = Table("user", "role", "sign-in", "created (UTC)")
    for user in users:
        state = "yes" if can_sign_in(user) else ("deactivated" if not user.active else "no password (API user)")
        table.add_row(escape(user.username), user.role, state, f"{user.created_at:%Y-%m-%d %H:%M}")
    out.print(table)


registry_app = typer.Typer(
    help="The model registry: numbered versions of `domain` with their lineage, aliases (production, candidate), "
    "promote, rollback and the history of every move.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")
RefArg = Annotated[str, typer.Argument(help="A version: N, domain@N or an alias (candidate, domain@production).")]
AliasOpt = Annotated[str, typer.Option("--alias", help="The alias to move.")]
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it (default: the login name).")]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why, kept in the history.")]


def _production(ws: Workspace, cfg: ProjectConfig) -> tuple[str, Path] | None:
    """The registry's production version of `domain` (its ref and weights folder), which `domain` means once there is
    one, as `hangjia serve` resolves it; None without a registry or a production alias. Reads only."""
    from hangjia.app.db.engine import database_url, make_engine
    from hangjia.app.db.schema import current
    from hangjia.app.registry import PRODUCTION, Registry, has_registry

    url = database_url(cfg.database.url, ws.root)
    if current(url) is None:
        return None
    engine = make_engine(url)
    try:
        if not has_registry(engine):
            return None
    finally:
        engine.dispose()
    with Registry(url, ws.root, create=False) as registry:
        alias = registry.aliases().get(PRODUCTION)
        if alias is None:
            return None
        version = registry.version(alias.version)
        return version.ref, registry.weights(version)


def _registry(ws: Workspace, cfg: ProjectConfig):
    """The workspace's registry, its tables created or updated first."""
    from hangjia.app.db.engine import database_url
    from hangjia.app.registry import Registry

    return Registry(database_url(cfg.database.url, ws.root), ws.root)


def _registered(done, moved=None, why: str = "") -> None:
    """Say what a registration did, and what it did to the aliases."""
    v = done.version
    if done.created:
        out.print(f"registered {v.ref}: {v.kind} weights {v.digest[:12]} (registry/blobs), by {v.created_by}")
    else:
        evaluated = "; its evaluation filled in" if done.evaluation_updated else ""
        out.print(f"{v.ref} already holds these weights and lineage: nothing new registered{evaluated}")
    for event in (done.moved, moved):
        if event is not None:
            out.print(
                f"{v.model}@{event.alias} → {v.ref}" + (f" (was {event.from_version})" if event.from_version else "")
            )
    if why:
        out.print(why)


def _register_build(ws: Workspace, cfg: ProjectConfig) -> None:
    """After a build: register the model as `candidate`, and as `production` when there is none yet and the gate
    (gate: rules, when any are set) passed."""
    from hangjia.app.lineage import provenance
    from hangjia.app.registry import register_build
    from hangjia.eval.gate import active_rules
    from hangjia.stages.eval import gate

    passed = None
    if active_rules(cfg.gate):
        passed = gate(ws, cfg).passed if ws.manifest("eval") else False
    made = provenance(ws, cfg.train.base_model)
    with _registry(ws, cfg) as registry:
        done, moved, why = register_build(registry, made, passed)
    _registered(done, moved, why)


@registry_app.command("register")
def registry_register(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Point this alias at it, e.g. candidate.")] = None,
    by: ByOpt = None,
) -> None:
    """Register the workspace's domain model (train's output, or dpo's on it) as the next version of `domain`, with
    its lineage (stages, configs, dataset versions, source files' hashes, code version, training metrics, evaluation).
    The same weights with the same lineage are the same version: registering again adds nothing."""
    from hangjia.app.lineage import provenance

    ws, cfg = _setup(workspace, config)
    made = provenance(ws, cfg.train.base_model)
    with _registry(ws, cfg) as registry:
        _registered(registry.register(made, alias=alias, by=by))


@registry_app.command("ls")
def registry_ls(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """List the versions of `domain`, oldest first: weights, data, training loss, domain accuracy, gate, aliases."""
    from hangjia.app.registry import evaluation_metrics

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        versions, aliases = registry.versions(), registry.aliases()
    table = Table(title=f"registry of {ws.root}", title_justify="left")
    for col in (
        "version",
        "aliases",
        "kind",
        "weights",
        "documents",
        "train loss",
        "accuracy",
        "gate",
        "created",
        "by",
    ):
        table.add_column(col, justify="right" if col in ("train loss", "accuracy") else "left")
    for v in versions:
        metrics = evaluation_metrics(v.evaluation)
        accuracy = metrics.get("eval.domain.rag_on.accuracy", metrics.get("eval.domain.rag_off.accuracy"))
        gate = {1.0: "passed", 0.0: "[red]failed[/]"}.get(metrics.get("eval.gate.passed"), "—")
        loss = v.lineage.get("training", {}).get("final_train_loss")
        table.add_row(
            v.ref,
            ", ".join(sorted(a for a, row in aliases.items() if row.version == v.version)),
            v.kind,
            v.digest[:12],
            v.lineage.get("datasets", {}).get("documents", "—"),
            "—" if loss is None else f"{loss:.3f}",
            _pct(accuracy),
            gate,
            f"{v.created_at:%Y-%m-%d %H:%M}",
            escape(v.created_by),
        )
    out.print(table)
    if not versions:
        out.print(f"No versions yet: `hangjia build` (or `hangjia registry register -w {ws.root}`) adds one.")


@registry_app.command("show")
def registry_show(
    workspace: WorkspaceOpt,
    ref: RefArg,
    config: ConfigOpt = None,
    lineage: Annotated[bool, typer.Option("--lineage", help="Print the whole lineage and evaluation as JSON.")] = False,
) -> None:
    """Show one version: weights, base model, aliases, data versions, source files, code, training and eval."""
    from hangjia.app.registry import evaluation_metrics

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        v = registry.resolve(ref)
        aliases = sorted(a for a, row in registry.aliases(v.model).items() if row.version == v.version)
        weights = registry.weights(v)
    if lineage:
        out.print_json(json.dumps({"lineage": v.lineage, "evaluation": v.evaluation}, default=str))
        return
    code = v.lineage.get("code", {})
    lines = {
        "version": v.ref + (f" ({', '.join(aliases)})" if aliases else ""),
        "registered": f"{v.created_at:%Y-%m-%d %H:%M:%S} UTC by {v.created_by}",
        "weights": f"{v.kind}, sha256 {v.digest}, {weights}",
        "base model": f"{v.base_model} (sha256 {v.base_digest[:12]})",
        "made by": f"stage {v.lineage.get('stage')}, hangjia {code.get('hangjia')}"
        + (f", git {code['git'][:12]}{' (dirty)' if code.get('dirty') else ''}" if code.get("git") else ""),
        "data": ", ".join(v.lineage.get("datasets", {}).values()) or "—",
        "sources": f"{len(v.lineage.get('sources', {}))} files (--lineage lists them with their sha256)",
    }
    for key, value in lines.items():
        out.print(f"{key:>11}: {escape(str(value))}", soft_wrap=True)
    numbers = {f"train.{k}": x for k, x in v.lineage.get("training", {}).items() if isinstance(x, int | float)}
    for key, value in (numbers | evaluation_metrics(v.evaluation)).items():
        out.print(f"{'':>11}  {key} = {_fmt(value)}")


@registry_app.command("diff")
def registry_diff(workspace: WorkspaceOpt, old: RefArg, new: RefArg, config: ConfigOpt = None) -> None:
    """What differs between two versions: source files added, removed or changed (by sha256), dataset versions,
    config, code, training metrics, evaluation, weights and base model."""
    from hangjia.app.registry import diff

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        a, b = registry.resolve(old), registry.resolve(new)
    changes = diff(a, b)
    out.print(f"{a.ref} → {b.ref}")
    files = changes.pop("sources")
    for kind in ("added", "removed", "changed"):
        if files[kind]:
            out.print(f"  documents {kind}: {escape(', '.join(files[kind]))}", soft_wrap=True)
    if not any(files.values()):
        out.print("  documents: unchanged")
    for section, rows in changes.items():
        for key, (before, after) in rows.items():
            out.print(f"  {section} {escape(key)}: {escape(_fmt(before))} → {escape(_fmt(after))}", soft_wrap=True)


@registry_app.command("promote")
def registry_promote(
    workspace: WorkspaceOpt,
    ref: RefArg,
    config: ConfigOpt = None,
    alias: AliasOpt = "production",
    by: ByOpt = None,
    note: NoteOpt = None,
) -> None:
    """Point an alias (production by default) at a version. A running `hangjia serve` on the same database answers
    `domain` (or `domain@ALIAS`) with it within a second; requests already running finish on the old one."""
    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        target = registry.resolve(ref)
        event = registry.promote(target.version, model=target.model, alias=alias, by=by, note=note)
    if event is None:
        out.print(f"{target.model}@{alias} is {target.ref} already; nothing moved")
    else:
        was = f" (was {target.model}@{event.from_version})" if event.from_version else ""
        out.print(f"{target.model}@{alias} → {target.ref}{was}")


@registry_app.command("rollback")
def registry_rollback(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alias: AliasOpt = "production",
    by: ByOpt = None,
    note: NoteOpt = None,
) -> None:
    """Move an alias back to the version it pointed at before its last move (rolling back a rollback goes forward
    again); the history keeps both moves."""
    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        event = registry.rollback(alias=alias, by=by, note=note)
    out.print(f"{event.model}@{alias} → {event.model}@{event.to_version} (was {event.model}@{event.from_version})")


@registry_app.command("history")
def registry_history(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alias: Annotated[str | None, typer.Option("--alias", help="Only this alias's moves.")] = None,
) -> None:
    """Every alias move, oldest first: when, who, which alias, from which version to which, and why."""
    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        events = registry.history(alias=alias)
    table = Table(title="alias moves", title_justify="left")
    for col in ("when (UTC)", "alias", "action", "from", "to", "by", "note"):
        table.add_column(col)
    for e in events:
        was = "—" if e.from_version is None else str(e.from_version)
        table.add_row(
            f"{e.at:%Y-%m-%d %H:%M:%S}", e.alias, e.action, was, str(e.to_version), e.by, escape(e.note or "")
        )
    out.print(table)


@registry_app.command("export-mlflow")
def registry_export_mlflow(
    workspace: WorkspaceOpt,
    tracking_uri: Annotated[
        str, typer.Option("--tracking-uri", help="MLflow's tracking URI: http://HOST:5000, sqlite:///PATH or a folder.")
    ],
    config: ConfigOpt = None,
    experiment: Annotated[str, typer.Option(help="The MLflow experiment the runs go to.")] = "hangjia",
) -> None:
    """Copy every version to MLflow as a run (params: config; metrics: training and eval; tags: digests, code
    version; artifact: lineage.json) and a registered model version, with the aliases; again later adds what is new.
    Needs `pip install 'hangjia[mlflow]'`."""
    from hangjia.app.db.engine import display_url
    from hangjia.app.mlflow_export import export_mlflow

    ws, cfg = _setup(workspace, config)
    with _registry(ws, cfg) as registry:
        done = export_mlflow(registry, tracking_uri, experiment)
    where = escape(display_url(tracking_uri) if "://" in tracking_uri else tracking_uri)
    out.print(f"MLflow at {where}, experiment {experiment}: {len(done.runs)} versions ({len(done.created)} new)")
    for ref, version in done.versions.items():
        out.print(f"  {ref} → run {done.runs[ref]}, model version {version}")
    for alias, version in done.aliases.items():
        out.print(f"  alias {alias} → model version {version}")


ab_app = typer.Typer(
    help="A/B tests between two served versions (serve.ab): what users said of each.", no_args_is_help=True
)
app.add_typer(ab_app, name="ab")


@ab_app.command("report")
def ab_report(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the tests.")] = 0.05,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.")] = None,
    days: Annotated[
        float | None, typer.Option(help="Only the answers of the last DAYS days: the test's period (default: all).")
    ] = None,
    act: Annotated[
        bool,
        typer.Option(
            "--act",
            help="On a significant result between registry versions: promote a better candidate to production, or "
            "stop a worse one (its alias back to production's version).",
        ),
    ] = False,
) -> None:
    """Per version that answered serve.ab.model: thumbs-up rate, mean rating, wins in two-draft comparisons,
    abstentions and latency with 95% intervals, and whether the candidate differs significantly from the model."""
    from datetime import UTC, datetime, timedelta

    from rich.table import Table

    from hangjia.app.ab import report
    from hangjia.app.db.engine import make_engine, make_sessions
    from hangjia.core.config import ABConfig

    url = _database_url(workspace, config)
    _, cfg = _setup(workspace, config)
    ab = cfg.serve.ab or ABConfig()
    since = None if days is None else datetime.now(UTC) - timedelta(days=days)
    engine = make_engine(url)
    try:
        with make_sessions(engine)() as session:
            result = report(session, ab, alpha, since)
    finally:
        engine.dispose()
    table = Table(title=f"A/B: {ab.model} vs {ab.candidate} (share {ab.share:.0%})")
    for column in ("version", "answers", "thumbs up", "rating", "wins", "abstains", "latency p50"):
        table.add_column(column, justify="left" if column == "version" else "right")

    def rate(d: dict) -> str:
        if d["value"] is None:
            return "-"
        return f"{d['value']:.0%} [{d['low']:.0%}, {d['high']:.0%}] n={d['n']}"

    for arm in result["arms"] + result["others"]:
        r = arm["rating"]
        rating = (
            "-"
            if r["value"] is None
            else f"{r['value']:.2f}" + ("" if r["low"] is None else f" [{r['low']:.2f}, {r['high']:.2f}]")
        )
        latency = "-" if arm["latency_ms_p50"] is None else f"{arm['latency_ms_p50']} ms"
        table.add_row(
            arm["version"],
            str(arm["exchanges"]),
            rate(arm["thumbs_up"]),
            rating,
            rate(arm["wins"]),
            rate(arm["abstention"]),
            latency,
        )
    out.print(table)
    ps = ", ".join(f"{k} p={v:.3g}" for k, v in result["p_values"].items() if v is not None) or "nothing to test yet"
    out.print(escape(f"candidate vs model: {ps}"))
    verdict = {
        "better": "significantly better than the model",
        "worse": "significantly worse than the model",
        "mixed": "significantly better on some measures and worse on others",
        "no difference": "not significantly different from the model (yet)",
    }[result["verdict"]]
    out.print(f"[bold]{escape(ab.candidate)} is {verdict}[/bold] (alpha {alpha})")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    if act:
        from hangjia.app.ab import act as act_on
        from hangjia.app.registry import Registry, default_user

        with Registry(url, Path(workspace)) as registry:
            done = act_on(result, registry, default_user())
        out.print(escape(done or "--act: nothing to do (no significant result between two registry versions)"))


review_app = typer.Typer(
    help="The review queue: corrections, preferences and good answers wait for a reviewer before they teach the model.",
    no_args_is_help=True,
)
app.add_typer(review_app, name="review")
feedback_app = typer.Typer(help="Feedback as training data.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
ReviewerOpt = Annotated[str, typer.Option("--by", help="The reviewer: a user with the role reviewer or admin.")]


def _database_session(workspace: Path, config: Path | None):
    """(sessions, engine, display URL) on the workspace's database, its tables brought up to date."""
    from hangjia.app.db.engine import display_url, make_engine, make_sessions
    from hangjia.app.db.schema import upgrade

    url = _database_url(workspace, config)
    upgrade(url)
    engine = make_engine(url)
    return make_sessions(engine), engine, display_url(url)


@review_app.command("ls")
def review_ls(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Also the decided ones, with their latest decision.")] = False,
) -> None:
    """The judgements waiting for a reviewer (oldest first): id, kind, the question, the answer and the proposal."""
    from rich.table import Table

    from hangjia.app.db.models import Exchange
    from hangjia.app.review import queue
    from hangjia.core.prompts import last_question

    sessions, engine, _ = _database_session(workspace, config)
    table = Table(title="review queue", title_justify="left")
    for col in ("id", "kind", "question", "answer", "proposed", "decision"):
        table.add_column(col, overflow="fold")
    try:
        with sessions() as session:
            items = queue(session, include_decided=all_)
            for fb, review in items:
                ex = session.get(Exchange, fb.exchange_id)
                proposed = fb.corrected_answer or ""
                if fb.kind == "preference":
                    proposed = f"picked exchange {fb.chosen_exchange_id} over {fb.rejected_exchange_id}"
                elif fb.kind in ("thumbs", "rating"):
                    proposed = "keep this answer" + (f" (rated {fb.rating})" if fb.rating else "")
                decision = "pending" if review is None else review.decision
                table.add_row(
                    str(fb.id),
                    fb.kind,
                    escape(last_question(ex.messages))[:200],
                    escape(ex.answer)[:200],
                    escape(proposed)[:200],
                    decision,
                )
    finally:
        engine.dispose()
    out.print(table)
    out.print(f"{len(items)} item(s)")


def _decide(workspace: Path, config: Path | None, feedback_id: int, by: str, decision: str, text: str | None) -> None:
    from hangjia.app.review import decide

    sessions, engine, _ = _database_session(workspace, config)
    try:
        with sessions.begin() as session:
            review = decide(session, feedback_id, by, decision, text)
            out.print(f"feedback {feedback_id}: {decision} by {escape(by)} (review {review.id})")
    finally:
        engine.dispose()


@review_app.command("accept")
def review_accept(feedback_id: int, workspace: WorkspaceOpt, by: ReviewerOpt, config: ConfigOpt = None) -> None:
    """Accept a judgement as it is: it becomes training data at the next `hangjia feedback export`."""
    _decide(workspace, config, feedback_id, by, "accepted", None)


@review_app.command("edit")
def review_edit(
    feedback_id: int,
    workspace: WorkspaceOpt,
    by: ReviewerOpt,
    text: Annotated[str, typer.Option("--text", help="The answer as it should be.")],
    config: ConfigOpt = None,
) -> None:
    """Accept a correction or a good answer with the reviewer's text instead."""
    _decide(workspace, config, feedback_id, by, "edited", text)


@review_app.command("reject")
def review_reject(feedback_id: int, workspace: WorkspaceOpt, by: ReviewerOpt, config: ConfigOpt = None) -> None:
    """Reject a judgement: it never becomes training data (a later decision can still accept it)."""
    _decide(workspace, config, feedback_id, by, "rejected", None)


@feedback_app.command("export")
def feedback_export(workspace: WorkspaceOpt, config: ConfigOpt = None) -> None:
    """Write the accepted feedback as datasets: feedback_sft (alpaca: the question with its passages → the accepted
    answer) and feedback_dpo (question, chosen, rejected), each row naming its feedback and exchange."""
    from hangjia.app.review import export

    sessions, engine, url = _database_session(workspace, config)
    try:
        with sessions() as session:
            written = export(session, Workspace(workspace).root / "datasets", url)
    finally:
        engine.dispose()
    for name, info in written.items():
        out.print(f"{name}: " + ("nothing accepted yet" if info is None else f"{info['rows']} rows → {info['ref']}"))


@app.command()
def retrain(
    workspace: WorkspaceOpt,
    config: ConfigOpt = None,
    if_drift: Annotated[
        bool,
        typer.Option(
            "--if-drift",
            help="First check the served questions for drift (`hangjia drift --from-db`); retrain only when they "
            "drifted. For a scheduled job (cron, Kubernetes CronJob).",
        ),
    ] = False,
    days: Annotated[float, typer.Option(help="With --if-drift: the served answers of the last DAYS days.")] = 7.0,
    promote: Annotated[
        bool, typer.Option(help="Promote the candidate to production when the gate passes (--no-promote: only tell).")
    ] = True,
    force: Annotated[bool, typer.Option(help="Retrain even when production already learned all the feedback.")] = False,
    by: ByOpt = None,
) -> None:
    """Train a candidate on the accepted feedback (`hangjia feedback export`) — production's adapter further on it
    with replayed training data, or a fresh one when the documents changed — then DPO on its preference pairs,
    evaluate it against production (retrain.gate), register it as `domain@candidate` and promote it when the gate
    passes. Writes a report to WORKSPACE/retrain/. Exit 0: promoted, or nothing to do; 1: the gate kept production."""
    from hangjia.app.db.engine import database_url
    from hangjia.app.retrain import KEPT
    from hangjia.app.retrain import retrain as run_retrain

    ws, cfg = _setup(workspace, config)
    if if_drift:
        from hangjia.stages.drift import drift as run_drift

        with tempfile.TemporaryDirectory() as tmp:
            questions, exchanges = _served_for_drift(ws, cfg, days, Path(tmp))
            report = run_drift(ws, cfg, console, questions, exchanges, None)
        _print_drift(report)
        if not report.drifted:
            out.print(f"no drift in the last {days:g} days: nothing retrained")
            return
        out.print("[red]drift detected[/]: retraining")
    result = run_retrain(ws, cfg, console, database_url(cfg.database.url, ws.root), by=by, promote=promote, force=force)
    if result.comparison:
        table = Table(title=f"domain@{result.candidate} (candidate) vs domain@{result.production} (production)")
        for col in ("measure", "candidate", "production", "change"):
            table.add_column(col, justify="left" if col == "measure" else "right")
        for r in result.comparison:
            table.add_row(r["measure"], f"{r['candidate']:.1f}", f"{r['production']:.1f}", f"{r['change']:+.1f}")
        out.print(table)
    if result.gate:
        for c in result.gate["checks"]:
            out.print(("[green]✓[/] " if c["passed"] else "[red]✗[/] ") + escape(c["message"]))
    report = f"; report: {result.report}" if result.report else ""
    out.print(f"[bold]{result.outcome}[/]: {escape(result.why)}{report}")
    if result.outcome == KEPT and result.gate and not result.gate["passed"]:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the Hangjia version."""
    out.print(__version__)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file "Loading weights" bars; ours show the work
    try:
        app()
    except HangjiaError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; committed stage outputs are intact.")
        sys.exit(130)
