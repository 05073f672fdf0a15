"""Multiple-choice evaluation by log-likelihood, in the shape of lm-evaluation-harness's MMLU, CMMLU and C-Eval tasks.

Each choice is scored as the summed log-probability of a continuation after the prompt; no text is
generated. `acc` compares the letters " A".." D" (MMLU's official metric); `acc_norm` compares the
choice texts, each divided by its length in bytes so that long answers are not penalised for length.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from hangjia.core.errors import HangjiaError

LETTERS = "ABCD"
MMLU_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
MMLU_COLUMNS = {name: n for n, name in enumerate(MMLU_HEADER)}
SPLITS = ("test", "dev", "val")
# lm-eval's cmmlu and ceval tasks: the description names the subject in Chinese; the cue replaces "Answer:".
ZH_DESCRIPTIONS = {
    "cmmlu": "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n",
    "ceval": "以下是中国关于{}考试的单项选择题，请选出其中的正确答案。\n\n",
}
ZH_CUE = "答案："


@dataclass
class MCQ:
    id: str
    question: str
    choices: list[str]
    answer: int
    """0-based index of the correct choice."""
    subject: str = ""
    header: str | None = None
    """The prompt's opening description; None: MMLU's English one about `subject` (none without a subject)."""
    cue: str = "Answer:"
    """The last words of the prompt, before the answer letter."""


def _answer_index(value: Any) -> int:
    """'B', 'b' or 1 (or '1') -> 1; anything else raises ValueError."""
    text = str(value).strip()
    if text.upper() in LETTERS and len(text) == 1:
        return LETTERS.index(text.upper())
    if text in {"0", "1", "2", "3"}:
        return int(text)
    raise ValueError(f"answer {value!r} is not one of A, B, C, D (or 0-3)")


def load_mcq_jsonl(path: Path, subject: str = "") -> list[MCQ]:
    """One JSON object per line: id, question, choices (4 strings), answer letter."""
    if not path.is_file():
        raise HangjiaError(f"Multiple-choice file {path} does not exist.")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            choices = [str(c) for c in row["choices"]]
            if len(choices) != 4:
                raise ValueError(f"{len(choices)} choices instead of 4")
            items.append(
                MCQ(
                    id=str(row.get("id", f"q{lineno}")),
                    question=row["question"],
                    choices=choices,
                    answer=_answer_index(row["answer"]),
                    subject=row.get("subject", subject),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise HangjiaError(
                f"{path}:{lineno} is not a multiple-choice record ({exc}); each line needs 'question', "
                "4 'choices' and an 'answer' letter A-D."
            ) from None
    if not items:
        raise HangjiaError(f"Multiple-choice file {path} has no questions.")
    return items


def _split_suffix(path: Path) -> str | None:
    """`test` from anatomy_test.csv (MMLU, C-Eval name the split in the file); None for CMMLU's anatomy.csv."""
    return next((s for s in SPLITS if path.stem.endswith(f"_{s}")), None)


def subject_of(path: Path) -> str:
    """`anatomy` from anatomy_test.csv, anatomy_dev.csv, anatomy_val.csv (MMLU, C-Eval) or anatomy.csv (CMMLU)."""
    split = _split_suffix(path)
    return path.stem.removesuffix(f"_{split}") if split else path.stem


def dev_file_for(path: Path) -> Path:
    """The solved questions beside a test file, as each benchmark lays them out: MMLU `test/X_test.csv` →
    `dev/X_dev.csv`, C-Eval `val/X_val.csv` → `dev/X_dev.csv`, CMMLU `test/X.csv` → `dev/X.csv`."""
    subject = subject_of(path)
    tried = [path.parent.parent / "dev" / f"{subject}_dev.csv", path.parent.parent / "dev" / f"{subject}.csv"]
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise HangjiaError(
            f"k-shot evaluation of {path} needs its dev file with the solved questions; looked for "
            f"{' and '.join(str(p) for p in tried)}. Set eval.general_shots: 0 or put the dev file there."
        )
    return found


def _layout(first_row: list[str]) -> tuple[str, dict[str, int]] | None:
    """(benchmark, column of question / each choice / answer) from a header row; None when it is no header."""
    cells = [c.strip().lower() for c in first_row]
    if cells == MMLU_HEADER:
        return "mmlu", MMLU_COLUMNS
    if {"question", "a", "b", "c", "d", "answer"} <= set(cells):
        names = ["question", *"abcd", "answer"]
        columns = {key: cells.index(name) for key, name in zip(MMLU_HEADER, names, strict=True)}
        # C-Eval: id,question,A,B,C,D,answer,explanation; CMMLU: ,Question,A,B,C,D,Answer.
        return ("ceval" if cells[0] == "id" or "explanation" in cells else "cmmlu"), columns
    return None


def load_mcq_csv(path: Path, subject: str | None = None) -> list[MCQ]:
    """Multiple-choice rows of MMLU (the original release: no header, answer letter; the copy under
    shared/benchmarks/mmlu: header row, 0-based answer index), CMMLU (`,Question,A,B,C,D,Answer`) or C-Eval
    (`id,question,A,B,C,D,answer,explanation`), each prompted as lm-eval's task for that benchmark does.

    `subject` defaults to the file's name without its split (`subject_of`). Ids are `<subject>/<split>/<row>`, so
    a test item and a dev shot never share one."""
    if not path.is_file():
        raise HangjiaError(f"Multiple-choice file {path} does not exist.")
    subject = subject or subject_of(path)
    split = _split_suffix(path) or (path.parent.name if path.parent.name in SPLITS else "")
    items = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        columns, width, template, start = MMLU_COLUMNS, len(MMLU_HEADER), {}, 1
        for row in reader:
            # Fields may span lines, so a record starts one line after the previous record ended.
            lineno, start = start, reader.line_num + 1
            if lineno == 1 and (layout := _layout(row)) is not None:
                (benchmark, columns), width = layout, len(row)
                template = _template(benchmark, subject)
                continue
            if not any(c.strip() for c in row):
                continue
            try:
                if len(row) != width:
                    raise ValueError(f"{len(row)} columns instead of {width}")
                if not row[columns["answer"]].strip():
                    raise ValueError("no answer (C-Eval's test split is unlabelled: evaluate its val split)")
                items.append(
                    MCQ(
                        id="/".join(part for part in (subject, split, str(len(items))) if part),
                        question=row[columns["question"]],
                        choices=[row[columns[f"choice{k}"]] for k in range(4)],
                        answer=_answer_index(row[columns["answer"]]),
                        subject=subject,
                        **template,
                    )
                )
            except ValueError as exc:
                raise HangjiaError(
                    f"{path}:{lineno} is not a multiple-choice row ({exc}); expected question, A, B, C, D, answer "
                    "(MMLU), or the CMMLU / C-Eval header and columns."
                ) from None
    if not items:
        raise HangjiaError(f"Multiple-choice file {path} has no questions.")
    return items


@cache
def _subjects_zh() -> dict[str, dict[str, str]]:
    """Chinese subject names of CMMLU and C-Eval (from each benchmark's own subject list)."""
    return json.loads(resources.files("hangjia.eval").joinpath("subjects_zh.json").read_text(encoding="utf-8"))


def _template(benchmark: str, subject: str) -> dict[str, Any]:
    """lm-eval's description and answer cue for CMMLU and C-Eval (Chinese subject names); MMLU's are the defaults."""
    if benchmark == "mmlu":
        return {}
    name = _subjects_zh()[benchmark].get(subject, subject.replace("_", " "))
    return {"header": ZH_DESCRIPTIONS[benchmark].format(name), "cue": ZH_CUE}


def _format(item: MCQ) -> str:
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, item.choices, strict=True))
    return f"{item.question.strip()}{options}\n{item.cue}"


def prompt(item: MCQ, shots: Sequence[MCQ] = ()) -> str:
    """lm-evaluation-harness prompt: the benchmark's description (MMLU's English subject header unless the item
    carries its own), solved shots, then the question ending in its cue ('Answer:', CMMLU / C-Eval '答案：')."""
    header = item.header or ""
    if item.header is None and item.subject:
        header = (
            f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
        )
    solved = "".join(f"{_format(shot)} {LETTERS[shot.answer]}\n\n" for shot in shots)
    return header + solved + _format(item)


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-eval splits them: trailing spaces of the context move to the
    continuation, and the continuation is whatever `encode(context + continuation)` has beyond the context's
    tokens, so a token merged across the boundary is scored as part of the continuation."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        # Nothing to condition on: start from BOS (lm-eval uses the end-of-text token).
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [start], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation, add_special_tokens=False)
    context_enc = tokenizer.encode(context, add_special_tokens=False)
    continuation_enc = whole[len(context_enc) :]
    if not continuation_enc:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens after its context")
    return context_enc, continuation_enc


def _forward_takes(model, name: str) -> bool:
    """Whether `model.forward` takes the keyword `name` (e.g. transformers' `logits_to_keep`, `past_key_values`)."""
    import inspect

    # A PEFT model's forward takes **kwargs and hands them to the transformers model it wraps.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return name in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def _cache_argument(model) -> str | None:
    """The keyword under which `model.forward` takes the keys and values of earlier positions (transformers 5.2x
    renamed `past_key_values` to `cache`), or None where a prefix cannot be handed over that way. None for prefix/
    P-tuning adapters too: PEFT feeds those their own virtual tokens through the same argument."""
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        return None
    return next((name for name in ("cache", "past_key_values") if _forward_takes(model, name)), None)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


MIN_SHARED = 4
"""A common prefix shorter than this is not run on its own: the saving would not pay for the extra forward call."""
GROUP_OVERHEAD = 16
"""What a group of its own costs, in token positions: the prefix's forward call and a last, part-filled batch."""


def _cost(rows: Sequence[tuple[int, ...]], shared: int) -> int:
    """Token positions a run of rows with `shared` leading tokens in common costs as one group: the prefix run once,
    then the rest of every row; without a usable prefix the rows go with all others that have none, at full length."""
    if len(rows) < 2 or shared < MIN_SHARED:
        return sum(map(len, rows))
    return GROUP_OVERHEAD + shared + sum(len(r) - shared for r in rows)


def prefix_groups(rows: Sequence[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """Rows grouped so that each group's common token prefix can be run once: lm-eval's MMLU prompts open with a
    per-subject header (~14 SmolLM2 tokens of ~76), k-shot prompts with the same solved questions, and a question's
    choice-text rows with its whole prompt. Rows with no prefix worth sharing come last, as one group.

    In lexicographic order rows sharing a prefix are adjacent and a run's common prefix is the least common prefix
    of its neighbours. A run is split where that least value occurs (the header of different subjects, say) when
    the parts cost fewer token positions (`_cost`) than the whole; then each part is tried in turn."""
    groups, rest, todo = [], [], [sorted(set(rows))]
    while todo:
        run = todo.pop()
        if len(run) < 2:
            rest += run
            continue
        neighbours = [_common_prefix(a, b) for a, b in zip(run, run[1:], strict=False)]
        least = min(neighbours)
        cuts = [i + 1 for i, n in enumerate(neighbours) if n == least]
        bounds = list(zip([0, *cuts], [*cuts, len(run)], strict=True))
        # A part's common prefix is the least of its own neighbours' (none for a single row).
        parts = [(run[a:b], min(neighbours[a : b - 1], default=0)) for a, b in bounds]
        if sum(_cost(part, shared) for part, shared in parts) < _cost(run, least):
            todo += [part for part, _ in parts]
        elif least >= MIN_SHARED:
            groups.append(run)
        else:
            rest += run
    return groups + [rest] if rest else groups


BATCH_OVERHEAD = 24
"""What one more forward call costs, in token positions: its per-layer dispatch, the cache copy and smaller matrix
products. `batch_bounds` splits a batch off only where that saves more padding than this. On the MMLU slice of
benchmarks/mcq_vs_lm_eval (2-core CPU, SmolLM2-135M) 4 ran slower than fixed batches, 12 and 24 faster."""


def batch_bounds(widths: Sequence[int], batch_size: int, overhead: int = BATCH_OVERHEAD) -> list[int]:
    """Where to cut rows of non-increasing `widths` into batches of at most `batch_size` rows, as the indices
    0 = b0 < b1 < ... < bk = len(widths): the cut with the fewest token positions run (each batch pads its rows to
    its first, widest one) plus `overhead` per batch. Fixed batches of `batch_size` pad the short rows of a batch
    that begins with a long one; here such a batch may end early. Dynamic programming over the prefixes, O(n·B)."""
    n = len(widths)
    best, cut = [0] * (n + 1), [0] * (n + 1)  # best[j]: the cost of rows [0, j); cut[j]: where its last batch begins
    for j in range(1, n + 1):
        best[j], cut[j] = min((best[i] + (j - i) * widths[i] + overhead, i) for i in range(max(0, j - batch_size), j))
    bounds = [n]
    while bounds[-1]:
        bounds.append(cut[bounds[-1]])
    return bounds[::-1]


def loglikelihoods(model, tokenizer, requests: Sequence[tuple[str, str]], batch_size: int = 8) -> list[float]:
    """Summed log-probability of each (context, continuation) pair's continuation tokens, in request order.

    Four savings, none of which changes a score beyond float rounding:
    - Requests whose model inputs are the same token ids share one row: MMLU's " A".." D" differ only in their one
      target token, so the four are read from one forward pass (lm-eval's HF backend does the same).
    - Rows that open with the same tokens (see `prefix_groups`) are batched together, and the batch's common prefix
      is run once; its keys and values are repeated over the batch as the model's cache (`cache`, formerly
      `past_key_values`) and only the rest of each row is run.
    - Each group's rows, longest first, are cut into batches where the padding saved pays for another forward call
      (`batch_bounds`), not into batches of exactly `batch_size` rows.
    - Only the positions that hold a target are projected onto the vocabulary: for SmolLM2-135M the 49,152-wide
      projection and its log-softmax are about a quarter of a full pass, and a 0-shot MMLU row needs 1 of its ~50-170
      positions.
    `batch_size` is the most rows (distinct inputs) a forward call takes."""
    import copy

    import torch

    max_length = getattr(model.config, "max_position_embeddings", None) or 2048
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows: dict[tuple[int, ...], list[int]] = {}  # distinct inputs -> the requests read from that row
    targets: list[list[int]] = []
    for n, (context, continuation) in enumerate(requests):
        context_enc, continuation_enc = _encode_pair(tokenizer, context, continuation)
        # The last token is only a target; keep at most max_length inputs, dropping the oldest (as lm-eval).
        ids = (context_enc + continuation_enc)[-(max_length + 1) :]
        rows.setdefault(tuple(ids[:-1]), []).append(n)
        targets.append(continuation_enc[-(len(ids) - 1) :])
    # Where each row's first target is predicted: a shared prefix must end before it, and logits start there.
    first_target = {inputs: min(len(inputs) - len(targets[n]) for n in ns) for inputs, ns in rows.items()}
    cache_arg = _cache_argument(model)
    share = cache_arg is not None
    keep = _forward_takes(model, "logits_to_keep")
    no_cache = {"use_cache": False} if _forward_takes(model, "use_cache") else {}
    batches = []  # (length of the prefix the batch's rows share and that is run once, the rows)
    for group in prefix_groups(list(rows)) if share else [list(rows)]:
        # The rows' common prefix, ending before any row's first target (its logits come from the rest).
        shared = 0
        if share and len(group) > 1:
            shared = min(*(first_target[r] for r in group), *(_common_prefix(group[0], r) for r in group[1:]))
        shared = shared if shared >= MIN_SHARED else 0
        # Longest first: similar lengths share a batch, and an out-of-memory error shows up on the first batch.
        group.sort(key=lambda inputs: -len(inputs))
        bounds = batch_bounds([len(inputs) - shared for inputs in group], batch_size)
        batches += [(shared, group[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    results = [0.0] * len(requests)
    was_training = model.training
    model.eval()
    cached: tuple[tuple[int, ...], Any] = ((), None)  # the last prefix run: its tokens and its cache
    with torch.inference_mode():
        for shared, batch in batches:
            prefix = batch[0][:shared]
            if shared and cached[0] != prefix:
                ids = torch.tensor([prefix], device=model.device)
                out = model(input_ids=ids, use_cache=True, **({"logits_to_keep": 1} if keep else {}))
                cached = (prefix, out.cache if cache_arg == "cache" else out.past_key_values)
            width = max(len(r) for r in batch) - shared
            # Right padding: with a causal mask, pads after a row's last token cannot change its logits.
            input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
            for row, inputs in enumerate(batch):
                input_ids[row, : len(inputs) - shared] = torch.tensor(inputs[shared:])
                mask[row, : len(inputs)] = 1
            kwargs: dict[str, Any] = dict(no_cache)
            if shared:
                past = copy.deepcopy(cached[1])
                past.batch_repeat_interleave(len(batch))
                positions = torch.arange(shared, shared + width, device=model.device).expand(len(batch), -1)
                kwargs = {cache_arg: past, "position_ids": positions}
            # Positions of the run part that predict a target of some row (a batch's rows end at different
            # positions, so their union, not the range from the first to the last); `at` maps them to logits.
            wanted = sorted({p - shared for r in batch for p in range(first_target[r], len(r))}) if keep else []
            at = {p: i for i, p in enumerate(wanted)} if keep else {p: p for p in range(width)}
            if keep:
                kwargs["logits_to_keep"] = torch.tensor(wanted, device=model.device)
            input_ids, mask = input_ids.to(model.device), mask.to(model.device)
            logits = model(input_ids=input_ids, attention_mask=mask, **kwargs).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            for row, inputs in enumerate(batch):
                for n in rows[inputs]:
                    # A continuation's positions are consecutive, and so are their places among `wanted`.
                    start = at[len(inputs) - shared - len(targets[n])]
                    span = logprobs[row, start : start + len(targets[n])]
                    target = torch.tensor(targets[n], device=span.device).unsqueeze(-1)
                    results[n] = span.gather(-1, target).sum().item()
    model.train(was_training)
    return results


def score_choices(
    model, tokenizer, context: str, continuations: list[str], batch_size: int = 8
) -> list[tuple[float, int]]:
    """(summed log-probability, length in UTF-8 bytes) of each continuation after `context`."""
    lls = loglikelihoods(model, tokenizer, [(context, c) for c in continuations], batch_size)
    return [(ll, len(c.encode("utf-8"))) for ll, c in zip(lls, continuations, strict=True)]


def shots_for(item: MCQ, shots: int, dev_items: Sequence[MCQ] | None) -> list[MCQ]:
    """The first `shots` dev items of the item's subject (MMLU uses the 5 dev rows in file order)."""
    if shots <= 0:
        return []
    pool = [d for d in dev_items or () if d.subject == item.subject and d.id != item.id]
    if len(pool) < shots:
        raise HangjiaError(
            f"{shots}-shot evaluation of {item.id} needs {shots} dev questions about {item.subject or 'its subject'}, "
            f"found {len(pool)}; pass more dev items or fewer shots."
        )
    return pool[:shots]


def evaluate_mcq(
    model,
    tokenizer,
    items: Sequence[MCQ],
    shots: int = 0,
    dev_items: Sequence[MCQ] | None = None,
    batch_size: int = 8,
    norm: bool = True,
) -> dict[str, Any]:
    """acc (letters " A".." D") and acc_norm (choice texts, log-probability per byte) over `items`.

    With `norm=False` only the letters are scored (MMLU's metric, and all lm-eval's MMLU task scores): one forward
    row per item instead of five, and `acc_norm` and the per-item `*_norm` fields are None."""
    per = 8 if norm else 4
    requests = []
    for item in items:
        context = prompt(item, shots_for(item, shots, dev_items))
        requests += [(context, f" {letter}") for letter in LETTERS]
        if norm:
            requests += [(context, f" {choice}") for choice in item.choices]
    lls = loglikelihoods(model, tokenizer, requests, batch_size)
    per_item = []
    for n, item in enumerate(items):
        letter_lls = lls[per * n : per * n + 4]
        pred = max(range(4), key=letter_lls.__getitem__)
        pred_norm = normed = None
        if norm:
            choice_lls = lls[per * n + 4 : per * n + 8]
            # lm-eval divides by the choice's length without the leading space; bytes, not characters, here.
            normed = [ll / max(len(c.encode("utf-8")), 1) for ll, c in zip(choice_lls, item.choices, strict=True)]
            pred_norm = max(range(4), key=normed.__getitem__)
        per_item.append(
            {
                "id": item.id,
                "subject": item.subject,
                "answer": LETTERS[item.answer],
                "pred": LETTERS[pred],
                "pred_norm": None if pred_norm is None else LETTERS[pred_norm],
                "correct": pred == item.answer,
                "correct_norm": None if pred_norm is None else pred_norm == item.answer,
                "loglikelihoods": letter_lls,
                "loglikelihoods_norm": normed,
            }
        )
    n = len(per_item)
    acc_norm = (round(sum(r["correct_norm"] for r in per_item) / n, 4) if n else 0.0) if norm else None
    return {
        "acc": round(sum(r["correct"] for r in per_item) / n, 4) if n else 0.0,
        "acc_norm": acc_norm,
        "n": n,
        "per_item": per_item,
    }
