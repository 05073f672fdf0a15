"""The generation engine: one base model, an optional adapter (or fully tuned model), an optional retrieval index.

`base` runs with the adapter switched off and `domain` with it on, so both share one copy of
the weights; a fully fine-tuned domain model (train.method: full) is a second model beside the base.
Evaluation may add `production`, the model in service now (an adapter or a whole model): an adapter of the domain
adapter's kind is loaded beside it on the same weights, anything else as a model of its own.
Calls are serialised by a lock: one CPU model, one generation at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import ensure_system, with_context
from hangjia.llm.models import load_causal_lm, load_tokenizer
from hangjia.llm.weights import BASE, DOMAIN, PRODUCTION, adapter_type, checked_model_folder, domain_weights, is_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from hangjia.core.workspace import Workspace
    from hangjia.corpus.index import BM25Index


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" or "length"
    citations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 is greedy and deterministic."""
    top_p: float = 1.0


class Engine:
    def __init__(
        self,
        base_dir: Path,
        adapter_dir: Path | None = None,
        index: BM25Index | None = None,
        rag_top_k: int = 3,
        production_dir: Path | None = None,
    ):
        self.base_dir = base_dir
        self.adapter_dir = adapter_dir
        self.tokenizer = load_tokenizer(base_dir)
        self.tokenizer.padding_side = "left"  # batched decoding needs prompts right-aligned
        # A folder with a config.json and no adapter_config.json is a whole model (full fine-tuning).
        full = adapter_dir is not None and not is_adapter(adapter_dir)
        self.model = load_causal_lm(base_dir, None if full else adapter_dir)
        self.full_model = load_causal_lm(adapter_dir) if full else None
        self.production_dir = production_dir
        self.production_model = None if production_dir is None else self._load_production(production_dir)
        self.index = index
        self.rag_top_k = rag_top_k
        # A model may end a turn on several tokens (Llama-3's <|eot_id|>, Qwen's pair): honour them all.
        configured = self.model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        self.eos_ids = sorted({i for i in [*configured, self.tokenizer.eos_token_id] if i is not None})
        self.context_limit = getattr(self.model.config, "max_position_embeddings", None)
        self._lock = threading.Lock()

    def _load_production(self, path: Path) -> PreTrainedModel | None:
        """The production model as a model of its own, or None when its adapter now sits beside the domain one."""
        path = checked_model_folder(path)
        if not is_adapter(path):
            return load_causal_lm(path)
        domain_kind = getattr(getattr(self.model, "active_peft_config", None), "peft_type", None)
        if domain_kind is not None and getattr(domain_kind, "value", domain_kind) == adapter_type(path):
            self.model.load_adapter(str(path), adapter_name=PRODUCTION)
            self.model.eval()
            return None
        return load_causal_lm(self.base_dir, path)

    @classmethod
    def from_workspace(
        cls, workspace: Workspace, base_model: str, rag_top_k: int = 3, production: Path | None = None
    ) -> Engine:
        """`base` from the trained adapter's own base (else `base_model`), `domain` from `train/adapter` (or from
        `dpo/adapter` when `hangjia dpo` has run on this very SFT adapter), retrieval from `index/` when built;
        `production` from the given folder, when there is one."""
        from hangjia.corpus.index import BM25Index

        domain = domain_weights(workspace, base_model)
        index = BM25Index.load(workspace.stage_dir("index")) if workspace.manifest("index") else None
        return cls(domain.base_dir, domain.tuned, index, rag_top_k, production)

    @property
    def model_names(self) -> list[str]:
        names = [BASE, DOMAIN] if self.adapter_dir is not None else [BASE]
        return names + [PRODUCTION] if self.production_dir is not None else names

    def check_model(self, name: str) -> None:
        if name not in self.model_names:
            raise HangjiaError(
                f"Unknown model '{name}'; this server has: {', '.join(self.model_names)}.", status_code=404
            )

    def default_rag(self, name: str) -> bool:
        return name == DOMAIN and self.index is not None

    def prepare(self, messages: list[dict[str, str]], rag: bool) -> tuple[list[dict[str, str]], list[dict]]:
        """Add the system prompt and, when `rag`, retrieved passages to the last user turn."""
        messages = ensure_system([dict(m) for m in messages])
        if not rag:
            return messages, []
        if self.index is None:
            raise HangjiaError("RAG was requested but this workspace has no index; run `hangjia ingest` first.")
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is None:
            return messages, []
        question = messages[last]["content"]
        hits = self.index.search(question, k=self.rag_top_k)
        passages = [chunk for chunk, _ in hits]
        messages[last]["content"] = with_context(question, passages)
        citations = [
            {"index": i, "chunk_id": c.id, "source": c.source, "section": c.section, "score": round(s, 4)}
            for i, (c, s) in enumerate(hits, start=1)
        ]
        return messages, citations

    def _encode(self, batch: list[list[dict[str, str]]], max_new_tokens: int):
        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in batch]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        n_prompt = int(enc["attention_mask"].sum(dim=1).max())
        if self.context_limit and n_prompt + max_new_tokens > self.context_limit:
            raise HangjiaError(
                f"The prompt has {n_prompt} tokens and {max_new_tokens} more were asked for, but the model's "
                f"context holds {self.context_limit}; shorten the conversation or lower max_tokens."
            )
        return enc

    def _answer_length(self, new) -> tuple[int, str]:
        """Tokens up to the first end-of-turn token, and whether the model stopped or hit the cap."""
        import torch

        ended = torch.isin(new, torch.tensor(self.eos_ids)).nonzero()
        return (int(ended[0]), "stop") if len(ended) else (len(new), "length")

    def _generate_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.eos_ids,
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
        if name == PRODUCTION and self.production_model is not None:
            yield self.production_model
        elif name == PRODUCTION:
            active = self.model.active_adapter
            self.model.set_adapter(PRODUCTION)
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
        self, batch: list[list[dict[str, str]]], name: str, params: GenerationParams
    ) -> list[Completion]:
        """Generate for prepared message lists (see `prepare`) in one padded batch."""
        import torch

        self.check_model(name)
        enc = self._encode(batch, params.max_new_tokens)
        with self._lock, self._weights(name) as model, torch.inference_mode():
            out = model.generate(**enc, **self._generate_kwargs(params))
        prompt_len = enc["input_ids"].shape[1]
        results = []
        for row, mask in zip(out, enc["attention_mask"], strict=True):
            new = row[prompt_len:]
            n_new, finish = self._answer_length(new)
            text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True)
            results.append(Completion(text.strip(), int(mask.sum()), n_new, finish))
        return results

    def chat(self, messages: list[dict[str, str]], name: str, params: GenerationParams, rag: bool) -> Completion:
        self.check_model(name)
        prepared, citations = self.prepare(messages, rag)
        completion = self.generate_batch([prepared], name, params)[0]
        completion.citations = citations
        return completion

    def stream(
        self, messages: list[dict[str, str]], name: str, params: GenerationParams, rag: bool
    ) -> tuple[list[dict], Iterator[str], Completion]:
        """(citations, text deltas, a Completion whose counts are final once the deltas are exhausted)."""
        from transformers import TextIteratorStreamer

        self.check_model(name)
        prepared, citations = self.prepare(messages, rag)
        enc = self._encode([prepared], params.max_new_tokens)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        summary = Completion("", int(enc["input_ids"].shape[1]), 0, "stop", citations)

        def run() -> None:
            import torch

            try:
                with self._lock, self._weights(name) as model, torch.inference_mode():
                    out = model.generate(**enc, **self._generate_kwargs(params), streamer=streamer)
            except BaseException:
                streamer.end()  # unblock the consumer; it sees a short answer rather than hanging
                summary.finish_reason = "error"
                raise
            new = out[0][enc["input_ids"].shape[1] :]
            summary.completion_tokens, summary.finish_reason = self._answer_length(new)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def deltas() -> Iterator[str]:
            for piece in streamer:
                if piece:
                    summary.text += piece
                    yield piece
            thread.join()

        return citations, deltas(), summary
