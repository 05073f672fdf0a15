"""The generation engine: one base model, an optional adapter (or fully tuned model), an optional retrieval index.

`base` runs with the adapter switched off and `domain` with it on, so both share one copy of
the weights; a fully fine-tuned domain model (train.method: full) is a second model beside the base.
Named versions may be added (a server's serve.versions; evaluation's `production`, the model in service now), each
loaded on first use: an adapter of the domain adapter's kind beside it on the same weights, any other adapter or
whole model as a model of its own, a GGUF file by the llama.cpp backend the server puts in `backends`.
Its own calls are serialised by a lock: one CPU model, one generation at a time. A name may instead be served by
another backend (llm/backend.py: llama.cpp with batched decoding, an OpenAI-compatible upstream), which takes the
prompt text this engine prepares.

Each call may bring a `Control`: a cancel event the server sets when the client goes away, and a hook
called once per decoding step (for time-to-first-token and inter-token metrics). Stop strings end decoding
as soon as they appear, so a stopped answer costs no tokens past its stop.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import ensure_system, with_context
from hangjia.llm.backend import Backend, Completion, Control, GenerationParams, cut_character
from hangjia.llm.models import load_causal_lm, load_tokenizer
from hangjia.llm.weights import (
    BASE,
    DOMAIN,
    PRODUCTION,
    adapter_type,
    checked_model_folder,
    checked_version,
    domain_weights,
    is_adapter,
    is_gguf,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from hangjia.core.workspace import Workspace
    from hangjia.corpus.index import BM25Index
    from hangjia.corpus.retrieve import Retriever
    from hangjia.llm.guard import AnswerGuard


def _stopping_criteria(tokenizer, prompt_len: int, stop: list[str], trim: bool, control: Control | None):
    """transformers StoppingCriteria for a cancel event and for stop strings in the decoded answer.

    The stop check decodes each row's new tokens (a Rust call, microseconds for a few hundred tokens, small
    beside a forward pass) so a stop string split over tokens is found exactly where StopScanner finds it.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            control.steps += 1
            if control.on_step is not None:
                control.on_step()
            return torch.full((input_ids.shape[0],), control.cancel.is_set(), dtype=torch.bool)

    class StopStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            texts = [t.lstrip() if trim else t for t in texts]
            return torch.tensor([any(s in t for s in stop) for t in texts], dtype=torch.bool)

    criteria = []
    if control is not None:
        criteria.append(Cancelled())
    if any(stop):
        stop = [s for s in stop if s]
        criteria.append(StopStrings())
    return StoppingCriteriaList(criteria)


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed torch's CPU generator for one call and put its state back after (callers hold the engine lock)."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class Engine:
    def __init__(
        self,
        base_dir: Path,
        adapter_dir: Path | None = None,
        index: Retriever | BM25Index | None = None,
        rag_top_k: int = 3,
        production_dir: Path | None = None,
        guard: bool = True,
        backends: dict[str, Backend] | None = None,
        versions: dict[str, Path] | None = None,
    ):
        self.base_dir = base_dir
        self.adapter_dir = adapter_dir
        self.tokenizer = load_tokenizer(base_dir)
        self.tokenizer.padding_side = "left"  # batched decoding needs prompts right-aligned
        # A folder with a config.json and no adapter_config.json is a whole model (full fine-tuning).
        full = adapter_dir is not None and not is_adapter(adapter_dir)
        self.model = load_causal_lm(base_dir, None if full else adapter_dir)
        self.full_model = load_causal_lm(adapter_dir) if full else None
        self.versions = {name: checked_version(name, path) for name, path in (versions or {}).items()}
        """Named versions beside base and domain: an adapter folder, a whole model folder or a GGUF file each."""
        if production_dir is not None:
            self.versions[PRODUCTION] = checked_model_folder(production_dir)
        if clash := {BASE, DOMAIN} & set(self.versions):
            raise HangjiaError(f"A model version may not be called {' or '.join(sorted(clash))}; rename it.")
        self._loaded: dict[str, PreTrainedModel] = {}
        """The versions the transformers model holds now: their own model, or `self.model` for an adapter beside the
        domain one."""
        domain_kind = getattr(getattr(self.model, "active_peft_config", None), "peft_type", None)
        self._domain_kind = getattr(domain_kind, "value", domain_kind)
        self.index = index
        self.rag_top_k = rag_top_k
        self.guard_default = guard
        self._guard: AnswerGuard | None = None
        # A model may end a turn on several tokens (Llama-3's <|eot_id|>, Qwen's pair): honour them all.
        configured = self.model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        self.eos_ids = sorted({i for i in [*configured, self.tokenizer.eos_token_id] if i is not None})
        self.context_limit = getattr(self.model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()
        self.backends: dict[str, Backend] = dict(backends or {})
        """Names generated by another backend than this engine's transformers model (llama.cpp, an upstream)."""

    def parallel(self, name: str) -> int:
        """Requests for `name` that decode together: the backend's batch, 1 behind the transformers lock."""
        backend = self.backends.get(name)
        return backend.parallel if backend is not None else 1

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()

    def shares_base(self, name: str) -> bool:
        """Whether version `name` is an adapter of the domain adapter's kind, which loads beside it on its weights."""
        path = self.versions[name]
        return is_adapter(path) and self._domain_kind is not None and adapter_type(path) == self._domain_kind

    def add_version(self, name: str, path: Path) -> None:
        """Serve one more named version (a registry version found while serving), loaded on its first use."""
        if name in (BASE, DOMAIN):
            raise HangjiaError(f"A model version may not be called {name}; rename it.")
        self.versions[name] = checked_version(name, path)

    def is_loaded(self, name: str) -> bool:
        return name not in self.versions or name in self._loaded or name in self.backends

    def load(self, name: str) -> None:
        """Load version `name` into the transformers model (once generation running now is done); a no-op when
        it is loaded."""
        with self._lock:
            self._load(name)

    def unload(self, name: str) -> None:
        """Free version `name`: its adapter, its own model or its backend; a no-op when it is not loaded."""
        backend = self.backends.pop(name, None) if name in self.versions else None
        if backend is not None:
            backend.close()
        with self._lock:
            model = self._loaded.pop(name, None)
            if model is self.model:
                self.model.delete_adapter(name)
            elif model is not None:
                del model
                gc.collect()  # a model's modules may refer to each other: free its tensors now, not at a later sweep

    def _load(self, name: str) -> PreTrainedModel:
        if name in self._loaded:
            return self._loaded[name]
        path = self.versions[name]
        if is_gguf(path):
            raise HangjiaError(f"Model '{name}' is a GGUF file ({path}), which only the llama.cpp backend serves.")
        if self.shares_base(name):
            self.model.load_adapter(str(path), adapter_name=name)
            self.model.eval()
            model = self.model
        else:
            model = load_causal_lm(self.base_dir, path) if is_adapter(path) else load_causal_lm(path)
        self._loaded[name] = model
        return model

    def guard(self, requested: bool | None = None) -> AnswerGuard | None:
        """The answer guard over the index's chunks (built on first use), when `requested` (None: the engine's
        default, rag.guard) and there is an index to guard with."""
        if not (self.guard_default if requested is None else requested) or self.index is None:
            return None
        if self._guard is None:
            from hangjia.llm.guard import AnswerGuard

            self._guard = AnswerGuard(getattr(self.index, "bm25", self.index))  # a Retriever holds its BM25Index
        return self._guard

    @classmethod
    def from_workspace(
        cls,
        workspace: Workspace,
        base_model: str,
        rag_top_k: int = 3,
        production: Path | None = None,
        guard: bool = True,
        versions: dict[str, Path] | None = None,
        domain: Path | None = None,
    ) -> Engine:
        """`base` from the trained adapter's own base (else `base_model`), `domain` from `train/adapter` (or from
        `dpo/adapter` when `hangjia dpo` has run on this very SFT adapter) unless `domain` names other weights (the
        registry's production version), retrieval from `index/` when built; `production` from the given folder, when
        there is one, and the named `versions`."""
        from hangjia.llm.retrieval import load_retriever

        trained = domain_weights(workspace, base_model)
        index = load_retriever(workspace.stage_dir("index")) if workspace.manifest("index") else None
        tuned = domain if domain is not None else trained.tuned
        return cls(trained.base_dir, tuned, index, rag_top_k, production, guard, versions=versions)

    @property
    def model_names(self) -> list[str]:
        return [BASE, DOMAIN, *self.versions] if self.adapter_dir is not None else [BASE, *self.versions]

    def check_model(self, name: str) -> None:
        if name == DOMAIN and self.adapter_dir is None:
            raise HangjiaError(
                "Model 'domain' is not trained in this workspace yet; run `hangjia build` (or `hangjia train`) "
                f"first, or ask for 'base'. This server has: {', '.join(self.model_names)}.",
                status_code=404,
            )
        if name not in self.model_names:
            raise HangjiaError(
                f"Unknown model '{name}'; this server has: {', '.join(self.model_names)}.", status_code=404
            )

    def default_rag(self, name: str) -> bool:
        """Retrieval is on by default for the domain model and its registered versions (`domain@3`)."""
        return (name == DOMAIN or name.startswith(f"{DOMAIN}@")) and self.index is not None

    def prepare(self, messages: list[dict[str, str]], rag: bool) -> tuple[list[dict[str, str]], list[dict]]:
        """Add the system prompt and, when `rag`, retrieved passages to the last user turn."""
        messages = ensure_system([dict(m) for m in messages])
        if not rag:
            return messages, []
        if self.index is None:
            raise HangjiaError("RAG was requested but this workspace has no index; run `hangjia ingest` first.")
        if not self.index.chunks:
            raise HangjiaError(
                "RAG was requested but the workspace's index holds no passages; run `hangjia ingest --docs DIR "
                "--force` on a folder of readable documents, or turn retrieval off (rag: false, chat --no-rag)."
            )
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is None:
            return messages, []
        question = messages[last]["content"]
        hits = self.index.search(question, k=self.rag_top_k)
        passages = [hit.chunk for hit in hits]
        messages[last]["content"] = with_context(question, passages)
        citations = [
            {
                "index": i,  # the [i] the prompt numbers the passage with
                "chunk_id": c.id,
                "source": c.source,
                "section": c.section,
                "page": c.page,
                "start": c.start,
                "end": c.end,
                "text": c.text.strip(),  # as the prompt shows it
                "score": round(s, 4),
                "cited": False,  # known once the answer is: core.citations.mark_cited
            }
            for i, (c, s) in enumerate([(hit.chunk, hit.score) for hit in hits], start=1)
        ]
        return messages, citations

    def format(self, messages: list[dict[str, str]]) -> str:
        """Prepared messages (see `prepare`) as the prompt text, in the model's chat template."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, texts: list[str], max_new_tokens: int):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        n_prompt = int(enc["attention_mask"].sum(dim=1).max())
        if self.context_limit and n_prompt + max_new_tokens > self.context_limit:
            raise HangjiaError(
                f"The prompt has {n_prompt} tokens and {max_new_tokens} more were asked for, but the model's "
                f"context holds {self.context_limit}; shorten the conversation or lower max_tokens."
            )
        return enc

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _answer_length(self, new) -> tuple[int, str]:
        """Tokens up to the first end-of-turn token, and whether the model stopped or hit the cap."""
        import torch

        ended = torch.isin(new, torch.tensor(self.eos_ids)).nonzero()
        return (int(ended[0]), "stop") if len(ended) else (len(new), "length")

    def _generate_kwargs(
        self, params: GenerationParams, prompt_len: int, trim: bool, control: Control | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_ids,
            "stopping_criteria": _stopping_criteria(self.tokenizer, prompt_len, params.stop, trim, control),
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    @contextmanager
    def using(self, name: str) -> Iterator[PreTrainedModel]:
        """The model with `name`'s weights (adapter on for domain, off for base), held for direct use
        such as log-likelihood scoring; generation through this engine waits meanwhile."""
        self.check_model(name)
        with self._lock, self._weights(name) as model:
            yield model

    @contextmanager
    def _weights(self, name: str) -> Iterator[PreTrainedModel]:
        """`name`'s model, set up for it; callers hold the lock. A version not loaded yet is loaded now."""
        if name in self.versions and (model := self._load(name)) is not self.model:
            yield model
        elif name in self.versions:
            active = self.model.active_adapter
            self.model.set_adapter(name)
            try:
                yield self.model
            finally:
                self.model.set_adapter(active)
        elif self.full_model is not None:
            yield self.full_model if name == DOMAIN else self.model
        elif name == BASE and self.adapter_dir is not None:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model

    def generate_batch(
        self,
        batch: list[list[dict[str, str]]],
        name: str,
        params: GenerationParams,
        control: Control | None = None,
    ) -> list[Completion]:
        """Generate for prepared message lists (see `prepare`) in one padded batch; answers trimmed."""
        return self.generate_texts([self.format(m) for m in batch], name, params, control, trim=True)

    def generate_texts(
        self,
        texts: list[str],
        name: str,
        params: GenerationParams,
        control: Control | None = None,
        *,
        trim: bool = False,
    ) -> list[Completion]:
        """Continue raw prompt texts in one padded batch; `trim` strips each answer (as chat answers are)."""
        import torch

        self.check_model(name)
        if name in self.backends:
            return self.backends[name].generate_texts(texts, params, control, trim=trim)
        enc = self._encode(texts, params.max_new_tokens)
        prompt_len = enc["input_ids"].shape[1]
        kwargs = self._generate_kwargs(params, prompt_len, trim, control)
        with self._lock, self._weights(name) as model, torch.inference_mode(), _seeded(params.seed):
            out = model.generate(**enc, **kwargs)
        results = []
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            new = row[prompt_len:]
            n_new, finish = self._answer_length(new)
            text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
            if finish == "length":
                text = cut_character(text)
            results.append(Completion(text.strip() if trim else text, int(mask.sum()), n_new, finish))
        if control is not None and control.cancel.is_set():
            for c in results:
                c.finish_reason = "abort" if c.finish_reason == "length" else c.finish_reason
        return results

    def chat(
        self,
        messages: list[dict[str, str]],
        name: str,
        params: GenerationParams,
        rag: bool,
        control: Control | None = None,
    ) -> Completion:
        self.check_model(name)
        prepared, citations = self.prepare(messages, rag)
        completion = self.generate_batch([prepared], name, params, control)[0]
        completion.citations = citations
        return completion

    def stream(
        self,
        messages: list[dict[str, str]],
        name: str,
        params: GenerationParams,
        rag: bool,
        control: Control | None = None,
    ) -> tuple[list[dict], Iterator[str], Completion]:
        """(citations, text deltas, a Completion whose counts are final once the deltas are exhausted)."""
        self.check_model(name)
        prepared, citations = self.prepare(messages, rag)
        deltas, summary = self.stream_text(self.format(prepared), name, params, control, trim=True)
        summary.citations = citations
        return citations, deltas, summary

    def stream_text(
        self, text: str, name: str, params: GenerationParams, control: Control | None = None, *, trim: bool = False
    ) -> tuple[Iterator[str], Completion]:
        """(text deltas, a Completion whose counts are final once the deltas are exhausted) for one raw prompt."""
        from transformers import TextIteratorStreamer

        self.check_model(name)
        if name in self.backends:
            return self.backends[name].stream_text(text, params, control, trim=trim)
        enc = self._encode([text], params.max_new_tokens)
        prompt_len = int(enc["input_ids"].shape[1])
        kwargs = self._generate_kwargs(params, prompt_len, trim, control)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        summary = Completion("", prompt_len, 0, "stop")

        def run() -> None:
            import torch

            try:
                with self._lock, self._weights(name) as model, torch.inference_mode(), _seeded(params.seed):
                    out = model.generate(**enc, **kwargs, streamer=streamer)
            except BaseException:
                streamer.end()  # unblock the consumer; it sees a short answer rather than hanging
                summary.finish_reason = "error"
                raise
            new = out[0][prompt_len:]
            summary.completion_tokens, summary.finish_reason = self._answer_length(new)
            if control is not None and control.cancel.is_set() and summary.finish_reason == "length":
                summary.finish_reason = "abort"

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def deltas() -> Iterator[str]:
            held = ""  # a piece ending in a split character waits for the rest of it, or for the end
            for piece in streamer:
                if piece.endswith("\ufffd"):
                    held += piece
                    continue
                piece, held = held + piece, ""
                if piece:
                    summary.text += piece
                    yield piece
            thread.join()
            held = cut_character(held) if summary.finish_reason in ("length", "abort") else held
            if held:
                summary.text += held
                yield held

        return deltas(), summary
