"""`hangjia export`: the `domain` model merged into its base and written as GGUF files for llama.cpp."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from hangjia.core.config import ProjectConfig
from hangjia.core.errors import HangjiaError
from hangjia.core.workspace import Workspace
from hangjia.stages.reporting import done, skipped

VERIFY_PROMPTS = (
    "What does error code E24 mean on a Kestrel dishwasher?",
    "How long is the warranty on a Kestrel heat pump compressor?",
    "Summarise what a service technician checks first when a dishwasher does not drain.",
)


def export(
    ws: Workspace, cfg: ProjectConfig, console: Console, formats: tuple[str, ...], verify: bool, force: bool = False
) -> dict[str, Any]:
    """The `domain` model merged into its base (fp32 safetensors) and written as GGUF files for llama.cpp; with
    `verify`, llama.cpp's greedy tokens are compared with transformers' on a few prompts and the agreement is counted
    (a 4-bit file agrees on fewer tokens; that is reported, not an error)."""
    from hangjia.core.prompts import question_messages
    from hangjia.llm.models import load_tokenizer
    from hangjia.llm.weights import domain_weights
    from hangjia.train.export import check_gguf_types, export_model

    check_gguf_types(formats)
    train = ws.require("train", "`hangjia train`")
    domain = domain_weights(ws, cfg.train.base_model)
    if domain.peft_type in ("PREFIX_TUNING", "P_TUNING"):
        raise HangjiaError(
            "Prefix tuning and P-tuning add virtual tokens at run time, which cannot be merged into the weights or "
            "written to GGUF; export needs train.method lora or full."
        )
    tuned, full = domain.tuned, domain.is_full_model
    inputs = {"train": train["fingerprint"], "domain": str(tuned.relative_to(ws.root))}
    if domain.stage == "dpo":
        inputs["dpo"] = ws.manifest("dpo")["fingerprint"]
    # As training and the server shape them (the shared system prompt, then the question), so that a tuned model
    # answers: fed the bare question, the demo's adapter ends at once and only its first token would be compared.
    prompts = []
    if verify:
        tokenizer = load_tokenizer(tuned if full else domain.base_dir)
        prompts = [
            tokenizer.apply_chat_template(question_messages(q), tokenize=False, add_generation_prompt=True)
            if tokenizer.chat_template
            else q
            for q in VERIFY_PROMPTS
        ]
    config = {"formats": list(formats), "verify": verify, "verify_prompts": prompts}
    if not force and ws.is_current("export", inputs, config):
        return skipped("export", ws)
    with ws.stage("export", inputs, config) as run, console.status(f"merging and writing {', '.join(formats)}"):
        summary = export_model(
            str(tuned if full else domain.base_dir),
            None if full else tuned,
            run.dir,
            formats=formats,
            verify_prompts=prompts if verify else None,
        )
        run.counts.update({f"{fmt}_bytes": v["bytes"] for fmt, v in summary["gguf"].items()})
        for fmt, rows in summary.get("verify", {}).items():
            run.counts[f"{fmt}_greedy_match"] = f"{sum(r['match'] for r in rows)}/{len(rows)}"
            # New tokens transformers generated, and how many of them llama.cpp gave too before the first difference.
            agreed = sum(len(r["hf_tokens"]) if r["match"] else r["first_mismatch"] for r in rows)
            run.counts[f"{fmt}_tokens_agreed"] = f"{agreed}/{sum(len(r['hf_tokens']) for r in rows)}"
    return done("export", ws)
