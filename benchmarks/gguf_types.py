"""The GGUF types `hangjia export` writes, on the embedded base (SmolLM2-135M-Instruct): file size, tensor types,
single-stream llama.cpp speed and greedy agreement with transformers on the export's verify prompts.

    .venv/bin/python benchmarks/gguf_types.py [--out /tmp/gguf_types] [--threads 2] [--repack]

Writes every type with `export_model` (no adapter: the base merged with nothing), verifying the three
VERIFY_PROMPTS as `hangjia export` shapes them (chat turns, 32 greedy tokens). Speed: a 400-token prompt from
examples/kestrel, then 128 greedy tokens, one sequence, the best of five rounds over all files (a burst of another
process hits every type alike), through `open_gguf` (weight repacking off, as the llama.cpp serving backend runs);
--repack adds a column with llama.cpp's default repacking on (not on a Xeon with AMX: it crashes on q8_0, see
train/export.open_gguf).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console

from hangjia.core.prompts import question_messages
from hangjia.llm.models import embedded_base_dir, load_tokenizer
from hangjia.stages.export import VERIFY_PROMPTS
from hangjia.train.export import GGUF_TYPES, export_model, llama_greedy, open_gguf

DOC = Path(__file__).resolve().parents[1] / "examples" / "kestrel" / "docs" / "heat_pump_troubleshooting.txt"


def open_for_speed(path: Path, threads: int, repack: bool):
    kwargs = {"n_ctx": 1024, "n_batch": 512, "n_threads": threads, "n_threads_batch": threads}
    if not repack:
        return open_gguf(path, **kwargs)
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)


def one_run(llm, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    """Prompt tokens/s and decode tokens/s of one sequence."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prefilled = time.perf_counter()
    tokens = llama_greedy(llm, prompt, new_tokens, set())  # finds the prompt evaluated, re-reads its last token
    end = time.perf_counter()
    assert len(tokens) == new_tokens
    return len(prompt) / (prefilled - start), new_tokens / (end - prefilled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/gguf_types"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=400)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds over all files; the best counts")
    parser.add_argument("--repack", action="store_true", help="also time with llama.cpp's weight repacking on")
    args = parser.parse_args()
    console = Console()

    base = embedded_base_dir()
    tokenizer = load_tokenizer(base)
    prompts = [
        tokenizer.apply_chat_template(question_messages(q), tokenize=False, add_generation_prompt=True)
        for q in VERIFY_PROMPTS
    ]
    console.print(f"load before: {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    summary = export_model(str(base), None, args.out, formats=GGUF_TYPES, verify_prompts=prompts)
    console.print(f"export with verify: {time.perf_counter() - start:.0f} s")
    long_prompt = tokenizer(DOC.read_text(encoding="utf-8")).input_ids[: args.prompt_tokens]
    console.print(f"speed: {len(long_prompt)} prompt tokens, {args.new_tokens} new, {args.threads} threads")

    # Every file timed once per round, round after round, so that another process's burst hits all types alike.
    variants = [(fmt, repack) for fmt in GGUF_TYPES for repack in ((False, True) if args.repack else (False,))]
    llms = {v: open_for_speed(Path(summary["gguf"][v[0]]["path"]), args.threads, v[1]) for v in variants}
    best = {v: (0.0, 0.0) for v in variants}
    for _ in range(args.rounds):
        for v, llm in llms.items():
            prefill, decode = one_run(llm, long_prompt, args.new_tokens)
            best[v] = (max(best[v][0], prefill), max(best[v][1], decode))
    for llm in llms.values():
        llm.close()

    header = ["type", "MiB", "tensor types", "prompts agreed", "tokens agreed", "prefill tok/s", "decode tok/s"]
    if args.repack:
        header.append("decode tok/s, repacking on")
    table = [header, ["---", "---:", "---", *["---:"] * (len(header) - 3)]]
    for fmt in GGUF_TYPES:
        info, rows = summary["gguf"][fmt], summary["verify"][fmt]
        agreed = sum(len(r["hf_tokens"]) if r["match"] else r["first_mismatch"] for r in rows)
        table.append(
            [
                fmt,
                f"{info['bytes'] / 2**20:.1f}",
                ", ".join(f"{n} {t}" for t, n in info["tensor_types"].items()),
                f"{sum(r['match'] for r in rows)}/{len(rows)}",
                f"{agreed}/{sum(len(r['hf_tokens']) for r in rows)}",
                f"{best[fmt, False][0]:.0f}",
                f"{best[fmt, False][1]:.1f}",
                *([f"{best[fmt, True][1]:.1f}"] if args.repack else []),
            ]
        )
        llm = open_gguf(Path(info["path"]), n_ctx=512, n_threads=args.threads)
        answer = llama_greedy(llm, tokenizer(prompts[0]).input_ids, 40, {tokenizer.eos_token_id})
        llm.close()
        console.print(f"[bold]{fmt}[/]: {tokenizer.decode(answer, skip_special_tokens=True)!r}")
    print("\n".join("| " + " | ".join(row) + " |" for row in table))  # markdown, for benchmarks/README.md
    console.print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
