"""Serving: `hangjia serve` against llama-cpp-python's OpenAI server, the same model and prompts, in the same run.

    .venv/bin/python benchmarks/serving/run.py                        # levels 1, 4, 16, 32; llama.cpp backend
    .venv/bin/python benchmarks/serving/run.py --soak                 # ... then 64 clients x 60 s on Hangjia
    .venv/bin/python benchmarks/serving/run.py --backend transformers --levels 1,2 --requests-per-level 2 \\
        --max-tokens 16                                               # a smoke run (a minute)

Issue 21. The peer needs llama-cpp-python's server extras: `pip install sse-starlette starlette-context
pydantic-settings` (what `llama-cpp-python[server]` adds; fastapi, uvicorn and pyyaml are already installed).

Setup (seconds): a workspace with the kestrel BM25 index (`hangjia ingest --config configs/kestrel.yaml`) unless
--workspace names one; the prompts are the kestrel questions (examples/kestrel/questions.jsonl), each with its top
rag.top_k retrieved passages, built once as chat messages by Hangjia's own code (`ensure_system` + `with_context`,
as `Engine.prepare` does). Both servers get the SAME messages; Hangjia's requests say `rag: false` so it adds
nothing. The model is `base` (the embedded SmolLM2-135M, converted to GGUF as `hangjia serve` converts it) unless
--workspace holds `export/model-<type>.gguf`, then `domain`. Both servers load the same GGUF file (Hangjia's
transformers backend reads the Hugging Face weights instead).

The servers run one after the other (never together), as subprocesses on free loopback ports:
  llama-cpp-python  python -m llama_cpp.server --model GGUF --n_ctx 2048 --n_threads T --n_threads_batch T
                    --interrupt_requests False --logits_all False (no chat_format: it applies the GGUF's own
                    tokenizer.chat_template, the template Hangjia applies with the Hugging Face tokenizer)
  Hangjia           python -m hangjia serve --workspace WS --config CFG (serve.backend, serve.gguf, serve.parallel,
                    serve.max_waiting, rag.guard false)
Each gets one warm-up request (non-streamed; its prompt_tokens and answer are printed side by side as a check
that both saw the same prompt), then per concurrency level c: R requests (default max(2c, 8)), c in flight, the
same prompts in the same order, streamed through `openai.AsyncOpenAI`, temperature 0, max_tokens.

Measured per level: aggregate output tokens/s = completion tokens of the level / its wall time; TTFT (request
sent → first content delta) p50/p95; ITL p50 = the median over requests of (e2e − TTFT) / (tokens − 1), the time
per output token after the first (chunk gaps are in the JSON too: Hangjia's transformers backend streams words,
not tokens). Tokens are what each server produced (neither server can be told to ignore the end of turn): the
usage of the last stream chunk (Hangjia) or the content chunks (llama-cpp-python streams one token per chunk and
sends no usage); the mean per server is printed, with the answers re-tokenized as a cross-check.

Targets (issue 21): at 16 streams ≥ 3× llama-cpp-python's tokens/s with a lower TTFT p95; at 1 stream ≥ 0.9×.
--soak: 64 clients × 60 s against Hangjia only: errors by type, the server's RSS sampled every 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
KESTREL = ROOT / "configs" / "kestrel.yaml"
QUESTIONS = ROOT / "examples" / "kestrel" / "questions.jsonl"
LEVELS = (1, 4, 16, 32)
PEER, HANGJIA = "llama-cpp-python", "hangjia"

# Run as the peer's entry point when weight repacking must be off: llama-cpp-python has no flag for llama.cpp's
# model parameter `use_extra_bufts` (what hangjia.train.export.open_gguf turns off: AMX q8_0 SIGSEGV, llama.cpp#20824).
NO_REPACK_LAUNCHER = """
import runpy
from llama_cpp import llama as llama_module
defaults = llama_module.llama_cpp.llama_model_default_params
def without_extra_buffers():
    params = defaults()
    params.use_extra_bufts = False
    return params
llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


# Setup ---------------------------------------------------------------------------------------------------------------


def hangjia_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hangjia", *args]


def prepare_workspace(workspace: Path | None, workdir: Path) -> Path:
    """The given workspace, or one with the kestrel documents ingested (chunks + BM25 index, no training)."""
    if workspace is not None:
        if not (workspace / "index" / "manifest.json").is_file():
            sys.exit(f"{workspace} has no index; run `hangjia ingest --workspace {workspace}` first.")
        return workspace
    ws = workdir / "ws"
    subprocess.run(
        hangjia_cli("ingest", "--workspace", str(ws), "--config", str(KESTREL)), check=True, stdout=subprocess.DEVNULL
    )
    return ws


def base_model_of(workspace: Path) -> str:
    """train.base_model of the workspace's own hangjia.yaml (embedded when there is none)."""
    config = workspace / "hangjia.yaml"
    if config.is_file():
        data = yaml.safe_load(config.read_text()) or {}
        return str((data.get("train") or {}).get("base_model") or "embedded")
    return "embedded"


def base_dir_of(workspace: Path) -> Path:
    from hangjia.llm.models import embedded_base_dir, resolve_base

    spec = base_model_of(workspace)
    return embedded_base_dir() if spec == "embedded" else resolve_base(spec, workspace)


def model_and_gguf(workspace: Path, gguf_type: str, workdir: Path) -> tuple[str, Path, str]:
    """(served name, the GGUF both servers load, how it was made)."""
    exported = workspace / "export" / f"model-{gguf_type}.gguf"
    if exported.is_file():
        return "domain", exported, "hangjia export"
    base_dir = base_dir_of(workspace)
    try:
        from hangjia.app.backends import base_gguf

        return "base", base_gguf(base_dir, gguf_type), "hangjia.app.backends.base_gguf"
    except ImportError:  # hangjia.train.export.write_gguf not there yet: the export's converter, our own copy
        from hangjia.train.export import to_gguf

        path = workdir / f"{base_dir.name}-{gguf_type}.gguf"
        if not path.is_file():
            to_gguf(base_dir, path, gguf_type)
        return "base", path, "hangjia.train.export.to_gguf (base_gguf unavailable)"


def build_prompts(workspace: Path, questions: Path) -> list[list[dict[str, str]]]:
    """Each question with its top rag.top_k passages, as `Engine.prepare` builds them (system prompt + context)."""
    from hangjia.core.config import load_config
    from hangjia.core.prompts import ensure_system, with_context
    from hangjia.llm.retrieval import load_retriever

    top_k = load_config(KESTREL).rag.top_k
    retriever = load_retriever(workspace / "index")
    prompts = []
    for line in questions.read_text().splitlines():
        if not line.strip():
            continue
        question = json.loads(line)["question"]
        passages = [hit.chunk for hit in retriever.search(question, k=top_k)]
        prompts.append(ensure_system([{"role": "user", "content": with_context(question, passages)}]))
    return prompts


def cpu() -> tuple[str, bool]:
    """(the CPU's model name, whether it has AMX) from /proc/cpuinfo."""
    path = Path("/proc/cpuinfo")
    info = path.read_text() if path.is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return (names[0] if names else platform.processor() or platform.machine()), " amx" in info


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("hangjia", "llama_cpp_python", "openai", "transformers", "torch", "fastapi", "uvicorn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


# Servers -------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess with its log file; `stop` ends it (SIGTERM, then SIGKILL) by its own pid."""

    def __init__(self, name: str, command: list[str], port: int, ready_path: str, log: Path):
        self.name, self.command, self.port, self.ready_path, self.log = name, command, port, ready_path, log
        self.proc: subprocess.Popen | None = None
        self.start_s = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 600) -> None:
        t0 = time.perf_counter()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} while starting:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        self.start_s = time.perf_counter() - t0
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready at {url} after {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def peer_server(args, gguf: Path, model: str, port: int, log: Path, repack: bool) -> Server:
    flags = [
        "--model", str(gguf), "--model_alias", model, "--n_ctx", str(args.context),
        "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads),
        "--interrupt_requests", "False", "--logits_all", "False", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    entry = ["-m", "llama_cpp.server"] if repack else ["-c", NO_REPACK_LAUNCHER]
    return Server(PEER, [sys.executable, *entry, *flags], port, "/v1/models", log)


def hangjia_server(args, workspace: Path, base_model: str, port: int, config: Path, log: Path) -> Server:
    settings = {
        "train": {"base_model": base_model},
        "rag": {"guard": False},
        "serve": {
            "backend": args.backend,
            "gguf": args.gguf_type,
            "parallel": args.parallel,
            "context": args.context,
            "max_waiting": max(256, 2 * args.soak_clients),
        },
    }
    from hangjia.core.config import ServeConfig

    if "cache_size" in ServeConfig.model_fields:  # the response cache would answer a repeated prompt without decoding
        settings["serve"]["cache_size"] = 0
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    command = hangjia_cli("serve", "--workspace", str(workspace), "--config", str(config), "--port", str(port))
    return Server(HANGJIA, command, port, "/ready", log)


def peer_repacked(log: Path) -> bool:
    """Whether llama.cpp put any weights in its repacked buffer (it logs the buffer's size; q8_0 has no repacked
    layout on some CPUs, AVX-512 AMD EPYC among them, where on and off run the same kernels)."""
    return "CPU_REPACK model buffer size" in log.read_text(errors="replace")


def peer_chat_format(log: Path) -> str:
    """What llama-cpp-python says it formats chats with (its verbose log at load)."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Using gguf chat template"):
            return "the GGUF's tokenizer.chat_template"
        if line.startswith(("Guessed chat format", "Using fallback chat format")):
            return line.strip()
    return "unknown (not in the log)"


def check_peer() -> None:
    probe = subprocess.run([sys.executable, "-c", "import llama_cpp.server.app"], capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(
            f"llama-cpp-python's server does not import ({probe.stderr.strip().splitlines()[-1]}); install its extras: "
            "`.venv/bin/pip install sse-starlette starlette-context pydantic-settings`, or run with --skip-peer."
        )


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# Load ----------------------------------------------------------------------------------------------------------------


@dataclass
class Result:
    request: int
    prompt: int
    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    e2e: float | None = None
    tokens: int = 0
    usage_tokens: int | None = None
    chunks: int = 0
    finish_reason: str | None = None
    gaps: list[float] = field(default_factory=list)
    text: str = ""


def client(server: Server):
    import openai

    return openai.AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=900)


def request_kwargs(server: Server, model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    if server.name == HANGJIA:
        kwargs["extra_body"] = {"rag": False}
    else:  # llama-cpp-python applies a repeat penalty of 1.1 by default, greedy or not; Hangjia applies none
        kwargs["extra_body"] = {"repeat_penalty": 1.0}
    return kwargs


async def one_request(api, server: Server, model: str, prompts, i: int, max_tokens: int) -> Result:
    result = Result(request=i, prompt=i % len(prompts))
    kwargs = request_kwargs(server, model, prompts[result.prompt], max_tokens)
    t0 = time.perf_counter()
    last = None
    pieces = []
    try:
        stream = await api.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.usage is not None:
                result.usage_tokens = chunk.usage.completion_tokens
            if chunk.choices and chunk.choices[0].finish_reason:
                result.finish_reason = chunk.choices[0].finish_reason
            if not chunk.choices or not chunk.choices[0].delta.content:
                continue
            now = time.perf_counter()
            if last is None:
                result.ttft = now - t0
            else:
                result.gaps.append(now - last)
            last = now
            result.chunks += 1
            pieces.append(chunk.choices[0].delta.content)
        result.e2e = time.perf_counter() - t0
        result.tokens = result.usage_tokens if result.usage_tokens is not None else result.chunks
        result.text = "".join(pieces)
        result.ok = result.ttft is not None
        if not result.ok:
            result.error = "EmptyAnswer"
    except Exception as err:  # every failure is a result: counted by type
        status = getattr(err, "status_code", None)
        result.error = type(err).__name__ + (f" {status}" if status else "")
    return result


async def run_level(server: Server, model: str, prompts, concurrency: int, n: int, max_tokens: int) -> tuple:
    api = client(server)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    results: list[Result] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            results.append(await one_request(api, server, model, prompts, i, max_tokens))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    await api.close()
    return sorted(results, key=lambda r: r.request), wall


def summarize(results: list[Result], wall: float, tokenizer=None) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in ok)
    ttft = [r.ttft for r in ok]
    tpot = [(r.e2e - r.ttft) / (r.tokens - 1) for r in ok if r.tokens > 1]
    gaps = [g for r in ok for g in r.gaps]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.error] = errors.get(r.error, 0) + 1

    def pct(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    out = {
        "requests": len(results),
        "ok": len(ok),
        "errors": errors,
        "wall_s": wall,
        "output_tokens": tokens,
        "tokens_per_s": tokens / wall if wall > 0 else 0.0,
        "mean_output_tokens": tokens / len(ok) if ok else 0.0,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p95_s": pct(ttft, 95),
        "itl_p50_s": pct(tpot, 50),
        "chunk_gap_p50_s": pct(gaps, 50),
        "e2e_p50_s": pct([r.e2e for r in ok], 50),
    }
    if tokenizer is not None and ok:
        retok = [len(tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in ok]
        out["mean_retokenized_tokens"] = sum(retok) / len(ok)
    return out


async def warm_up(server: Server, model: str, messages, max_tokens: int) -> dict[str, Any]:
    """One non-streamed request: (prompt_tokens, completion_tokens, answer), the check that both saw one prompt."""
    api = client(server)
    kwargs = request_kwargs(server, model, messages, max_tokens)
    t0 = time.perf_counter()
    reply = await api.chat.completions.create(**kwargs)
    seconds = time.perf_counter() - t0
    await api.close()
    usage = reply.usage
    return {
        "seconds": seconds,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "answer": reply.choices[0].message.content,
    }


async def soak(server: Server, model: str, prompts, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` clients, each sending its next request as soon as the last one ends, for `seconds`."""
    api = client(server)
    pid = server.proc.pid
    samples: list[tuple[float, int]] = []
    results: list[Result] = []
    t0 = time.perf_counter()
    deadline = t0 + seconds
    counter = iter(range(10**9))

    async def sampler() -> None:
        while time.perf_counter() < deadline:
            samples.append((time.perf_counter() - t0, rss_bytes(pid)))
            await asyncio.sleep(2)

    async def one_client() -> None:
        while time.perf_counter() < deadline:
            results.append(await one_request(api, server, model, prompts, next(counter), max_tokens))

    task = asyncio.create_task(sampler())
    await asyncio.gather(*(one_client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    await task
    samples.append((wall, rss_bytes(pid)))
    await api.close()
    rss = [b for _, b in samples]
    mid = min(samples, key=lambda s: abs(s[0] - seconds / 2))[1]
    summary = summarize(results, wall)
    summary.update(
        clients=clients,
        seconds=seconds,
        rss_start_mib=rss[0] / 2**20,
        rss_mid_mib=mid / 2**20,
        rss_end_mib=rss[-1] / 2**20,
        rss_max_mib=max(rss) / 2**20,
        rss_samples=[(round(t, 1), round(b / 2**20, 1)) for t, b in samples],
        # Flat: the second half of the run grew the RSS by at most 2% (or 16 MiB).
        memory_flat=rss[-1] - mid <= max(0.02 * mid, 16 * 2**20),
    )
    return summary


# Report --------------------------------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def table(levels: dict[str, dict[str, dict]]) -> str:
    rows = [
        "| streams | llama-cpp-python tok/s | Hangjia tok/s | ratio | TTFT p50 ms (peer / Hangjia) "
        "| TTFT p95 ms (peer / Hangjia) | ITL p50 ms (peer / Hangjia) | errors (peer / Hangjia) |",
        "|---:|---:|---:|---:|---|---|---|---|",
    ]
    for level in sorted({int(c) for runs in levels.values() for c in runs}):
        peer, ours = levels.get(PEER, {}).get(str(level)), levels.get(HANGJIA, {}).get(str(level))

        def get(run, key, fmt=ms):
            return "-" if run is None else fmt(run[key])

        ratio = f"{ours['tokens_per_s'] / peer['tokens_per_s']:.2f}×" if peer and ours and peer["tokens_per_s"] else "-"
        tps = lambda v: f"{v:.1f}"  # noqa: E731
        errs = lambda v: str(sum(v.values()))  # noqa: E731
        rows.append(
            f"| {level} | {get(peer, 'tokens_per_s', tps)} | {get(ours, 'tokens_per_s', tps)} | {ratio} "
            f"| {get(peer, 'ttft_p50_s')} / {get(ours, 'ttft_p50_s')} "
            f"| {get(peer, 'ttft_p95_s')} / {get(ours, 'ttft_p95_s')} "
            f"| {get(peer, 'itl_p50_s')} / {get(ours, 'itl_p50_s')} "
            f"| {get(peer, 'errors', errs)} / {get(ours, 'errors', errs)} |"
        )
    return "\n".join(rows)


def verdicts(levels: dict[str, dict[str, dict]]) -> dict[str, str]:
    def pair(level: int):
        return levels.get(PEER, {}).get(str(level)), levels.get(HANGJIA, {}).get(str(level))

    out = {}
    peer, ours = pair(16)
    if peer and ours and peer["tokens_per_s"] and peer["ttft_p95_s"] is not None and ours["ttft_p95_s"] is not None:
        ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
        passed = ratio >= 3 and ours["ttft_p95_s"] < peer["ttft_p95_s"]
        out["16 streams: >= 3x tok/s and lower TTFT p95"] = (
            f"{'PASS' if passed else 'FAIL'} ({ratio:.2f}x; TTFT p95 {ms(ours['ttft_p95_s'])} vs "
            f"{ms(peer['ttft_p95_s'])} ms)"
        )
    else:
        out["16 streams: >= 3x tok/s and lower TTFT p95"] = "not measured"
    peer, ours = pair(1)
    if peer and ours and peer["tokens_per_s"]:
        ratio = ours["tokens_per_s"] / peer["tokens_per_s"]
        out["1 stream: >= 0.9x tok/s"] = f"{'PASS' if ratio >= 0.9 else 'FAIL'} ({ratio:.2f}x)"
    else:
        out["1 stream: >= 0.9x tok/s"] = "not measured"
    return out


def measure(server: Server, model: str, prompts, args, report: dict[str, Any], tokenizer) -> None:
    """Start `server`, warm it up, run every level (and the soak, for Hangjia) into `report`."""
    name = server.name
    server.start()
    info: dict[str, Any] = {"command": server.command, "start_s": server.start_s, "log": str(server.log)}
    extra = ""
    if name == PEER:
        info["chat_format"] = peer_chat_format(server.log)
        info["weights_repacked"] = peer_repacked(server.log)
        extra = f"; chat format: {info['chat_format']}; weights repacked: {info['weights_repacked']}"
    info["warm_up"] = w = asyncio.run(warm_up(server, model, prompts[0], args.max_tokens))
    peer = report["servers"].get(PEER)
    if name == HANGJIA and peer is not None:
        same = w["answer"] == peer["warm_up"]["answer"]
        extra = f"; the same answer as llama-cpp-python's: {'yes' if same else 'no'}"
    report["servers"][name] = info
    print(
        f"{name}: ready in {server.start_s:.1f} s; warm-up {w['seconds']:.2f} s, prompt_tokens {w['prompt_tokens']}, "
        f"completion_tokens {w['completion_tokens']}: {w['answer'][:100]!r}{extra}"
    )
    levels = report["levels"].setdefault(name, {})
    for c in args.levels:
        n = args.requests_per_level or max(2 * c, 8)
        results, wall = asyncio.run(run_level(server, model, prompts, c, n, args.max_tokens))
        s = levels[str(c)] = summarize(results, wall, tokenizer)
        s["results"] = [{k: v for k, v in asdict(r).items() if k != "gaps"} for r in results]
        line = (
            f"  {name} c={c}: {s['ok']}/{s['requests']} ok in {wall:.1f} s, {s['tokens_per_s']:.1f} tok/s, mean "
            f"{s['mean_output_tokens']:.1f} tokens/answer (re-tokenized {s.get('mean_retokenized_tokens', 0):.1f}), "
            f"TTFT p50 {ms(s['ttft_p50_s'])} ms"
        )
        if s["errors"]:
            line += f", errors {s['errors']}"
        peer_run = report["levels"].get(PEER, {}).get(str(c))
        if name == HANGJIA and peer_run is not None:
            same = [a["text"] == b.text for a, b in zip(peer_run["results"], results, strict=False) if b.ok]
            s["answers_as_peer"] = f"{sum(same)}/{len(same)}"
            line += f", answers as llama-cpp-python's: {s['answers_as_peer']}"
        print(line)
    if name == HANGJIA and args.soak:
        print(f"soak: {args.soak_clients} clients x {args.soak_seconds:.0f} s against Hangjia ...")
        soak_run = soak(server, model, prompts, args.soak_clients, args.soak_seconds, args.max_tokens)
        report["soak"] = asyncio.run(soak_run)


def parse_levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["llama.cpp", "transformers"], default="llama.cpp", help="serve.backend")
    parser.add_argument("--levels", type=parse_levels, default=list(LEVELS), help="concurrency levels, e.g. 1,4,16,32")
    parser.add_argument("--requests-per-level", type=int, default=None, help="default max(2c, 8)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--parallel", type=int, default=16, help="serve.parallel")
    parser.add_argument("--context", type=int, default=2048, help="n_ctx of the peer, serve.context of Hangjia")
    parser.add_argument(
        "--gguf-type", default="f16", help="serve.gguf: the GGUF type both servers load (default f16, as serve.gguf)"
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="the peer's n_threads")
    parser.add_argument(
        "--peer-repack",
        choices=["auto", "on", "off"],
        default="off",
        help="llama.cpp's weight repacking (extra buffer types) in the peer. off (the default): the kernels of "
        "Hangjia's llama.cpp backend, which always turns it off (q8_0 crashes with it on AMX CPUs, llama.cpp#20824); "
        "on: llama-cpp-python's own default; auto: on unless the CPU has AMX",
    )
    parser.add_argument("--workspace", type=Path, default=None, help="a workspace with an index (default: ingest one)")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hangjia-serving-bench")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--skip-peer", action="store_true", help="measure Hangjia only (no ratios)")
    parser.add_argument("--soak", action="store_true", help="then 64 clients x 60 s against Hangjia")
    parser.add_argument("--soak-clients", type=int, default=64)
    parser.add_argument("--soak-seconds", type=float, default=60)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_peer:
        check_peer()

    # Setup
    t0 = time.perf_counter()
    workspace = prepare_workspace(args.workspace, args.workdir)
    ingest_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model, gguf, gguf_from = model_and_gguf(workspace, args.gguf_type, args.workdir)
    gguf_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prompts = build_prompts(workspace, args.questions)
    prompts_s = time.perf_counter() - t0
    from hangjia.llm.models import load_tokenizer

    tokenizer = load_tokenizer(base_dir_of(workspace))
    texts = [tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in prompts]
    prompt_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    cpu_name, amx = cpu()
    repack = {"on": True, "off": False, "auto": not amx}[args.peer_repack]

    machine = {
        "cpu": cpu_name,
        "nproc": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg(),
    }
    print(f"machine: {machine['cpu']}, nproc {machine['nproc']} ({machine['cores_available']} available), "
          f"load average {' '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}")  # fmt: skip
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    note = "" if model == "domain" else " (the domain model has the same architecture and size: the same speed)"
    print(f"model: {model}{note}; GGUF {gguf} ({gguf.stat().st_size / 2**20:.0f} MiB, from {gguf_from})")
    print(
        f"prompts: {len(prompts)} kestrel questions with their retrieved passages, {min(prompt_tokens)}-"
        f"{max(prompt_tokens)} tokens (mean {sum(prompt_tokens) / len(prompt_tokens):.0f}); max_tokens "
        f"{args.max_tokens}, temperature 0"
    )
    print(
        f"Hangjia: serve.backend {args.backend}, parallel {args.parallel}; llama-cpp-python: n_threads "
        f"{args.threads}, interrupt_requests off, logits_all off, weight repacking {'on' if repack else 'off'}"
    )
    print(f"setup: workspace {ingest_s:.1f} s, GGUF {gguf_s:.1f} s, prompts {prompts_s:.1f} s")
    if machine["load_average_at_start"][0] > 0.5:
        print(
            f"WARNING: load average {machine['load_average_at_start'][0]:.2f} at start: other processes share the "
            "cores, and llama.cpp's spinning threads slow down badly when cores are oversubscribed"
        )

    report: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": machine,
        "versions": versions(),
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "model": model,
            "gguf": str(gguf),
            "gguf_from": gguf_from,
            "peer_repack": repack,
        },
        "prompts": {"count": len(prompts), "tokens_min": min(prompt_tokens), "tokens_max": max(prompt_tokens)},
        "setup_s": {"workspace": ingest_s, "gguf": gguf_s, "prompts": prompts_s},
        "servers": {},
        "levels": {},
    }
    for name in ([] if args.skip_peer else [PEER]) + [HANGJIA]:
        port, log = free_port(), args.workdir / f"{name}.log"
        if name == PEER:
            server = peer_server(args, gguf, model, port, log, repack)
        else:
            config = args.workdir / "serve.yaml"
            server = hangjia_server(args, workspace, base_model_of(workspace), port, config, log)
        try:
            measure(server, model, prompts, args, report, tokenizer)
        finally:
            server.stop()

    report["machine"]["load_average_at_end"] = os.getloadavg()
    print()
    print(table(report["levels"]))
    print()
    report["verdicts"] = verdicts(report["levels"])
    for target, verdict in report["verdicts"].items():
        print(f"{target}: {verdict}")
    if "soak" in report:
        s = report["soak"]
        print(
            f"soak ({s['clients']} clients x {s['seconds']:.0f} s): {s['ok']}/{s['requests']} ok, errors "
            f"{s['errors'] or 0}, {s['tokens_per_s']:.1f} tok/s; RSS start {s['rss_start_mib']:.0f} MiB, mid "
            f"{s['rss_mid_mib']:.0f}, end {s['rss_end_mib']:.0f}, max {s['rss_max_mib']:.0f}: "
            f"{'flat' if s['memory_flat'] else 'GROWING'}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
