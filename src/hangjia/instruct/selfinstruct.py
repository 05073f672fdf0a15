"""Self-Instruct (Wang et al. 2022): grow a pool of tasks from a few human-written seed tasks, then answer them.

Each round shows the teacher a sample of the pool (by default 6 seed tasks and 2 generated ones, as in the paper)
and asks for new tasks. A new instruction is kept only if it passes the paper's filters: ROUGE-L against every
instruction already in the pool below the threshold (novel, not a rewording), 3 to 150 words, none of the words a
text model cannot act on (image, draw, video, ...), and starting with a letter. The teacher then answers each kept
instruction, greedily; with `retrieve`, from the domain passages it is given, and the answer must be grounded in them.
Seed tasks' inputs are not shown: a new task must carry its details in the instruction (the prompt asks for that).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache

from hangjia.core.grounding import is_grounded, tokens, word_count
from hangjia.core.prompts import with_context
from hangjia.corpus.chunk import Chunk
from hangjia.instruct.synth import QAPair
from hangjia.llm.teacher import Messages, Teacher

# The paper's list (self_instruct/bootstrap_instructions.py): tasks a text-only model cannot do.
BLACKLIST = (
    "image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
    "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram",
)  # fmt: skip
_BLACKLISTED = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
_TASK_LINE = re.compile(r"^\s*(?:task\s*\d+\s*[:.)]|\d+\s*[.):]|[-*•])\s*", re.IGNORECASE)
NEW_PER_PROMPT = 8
MIN_WORDS, MAX_WORDS = 3, 150

TASK_SYSTEM = "You design tasks for training an expert assistant."
ANSWER_SYSTEM = "You are an expert assistant. Answer the task directly and completely, without preamble."
CONTEXT_SYSTEM = "You are an expert assistant. Answer the task using only the numbered passages; do not add facts."


class _Tokenizer:
    """ROUGE's default tokenizer drops every non-ASCII character; this one keeps words and each CJK character."""

    _CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"  # kana, CJK ideographs, Hangul
    _WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")

    def tokenize(self, text: str) -> list[str]:
        return self._WORD.findall(text.lower())


@cache
def _scorer():
    from rouge_score import rouge_scorer  # imports nltk: ~2 s, paid only by runs that use Self-Instruct

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def max_rouge_l(instruction: str, pool: Sequence[str]) -> float:
    """The highest ROUGE-L F1 between the instruction and any in the pool (0 for an empty pool)."""
    scorer = _scorer()
    return max((scorer.score(other, instruction)["rougeL"].fmeasure for other in pool), default=0.0)


def tasks_prompt(examples: Sequence[str], n: int) -> Messages:
    listed = "\n".join(f"Task {i}: {' '.join(e.split())}" for i, e in enumerate(examples, start=1))
    user = (
        f"Here are example tasks for an assistant in this domain:\n\n{listed}\n\n"
        f"Come up with {n} new tasks in the same domain that differ from these and from each other in topic and "
        "in kind (questions, explanations, calculations, comparisons, step-by-step instructions). Each task must be "
        "self-contained: include any details it needs. Write one task per line as 'Task N: ...'."
    )
    return [{"role": "system", "content": TASK_SYSTEM}, {"role": "user", "content": user}]


def parse_tasks(reply: str) -> list[str]:
    """Instructions from "Task N:" lines or a numbered or bulleted list.

    An unmarked line continues the task above when that one has not ended a sentence, else it is chatter
    ("Here are 8 tasks:", "I hope these help!") and skipped.
    """
    tasks: list[str] = []
    for line in reply.splitlines():
        if not line.strip():
            continue
        marked = _TASK_LINE.match(line)
        if marked:
            tasks.append(line[marked.end() :].strip())
        elif tasks and not tasks[-1].rstrip().endswith((".", "?", "!", ":")):
            tasks[-1] += " " + line.strip()
    return [" ".join(t.split()) for t in tasks if t.strip()]


def reject_reason(instruction: str) -> str | None:
    """The paper's filters, but for novelty: why the instruction cannot be a task, or None."""
    n = word_count(instruction)
    if n < MIN_WORDS:
        return "instruction too short"
    if n > MAX_WORDS:
        return "instruction too long"
    if _BLACKLISTED.search(instruction):
        return "unsupported keyword"
    if not instruction[0].isalpha():
        return "starts with a non-letter"
    return None


def self_instruct(
    seed_tasks: Sequence[dict],
    teacher: Teacher,
    *,
    target: int,
    retrieve: Callable[[str], list[Chunk]] | None = None,
    rouge_threshold: float = 0.7,
    in_context: int = 8,
    max_rounds: int = 20,
    prompts_per_round: int = 4,
    max_tokens: int = 512,
    max_answer_words: int = 250,
    temperature: float = 0.7,
    seed: int = 0,
) -> tuple[list[QAPair], Counter]:
    """Up to `target` new instruction-answer pairs, and the number of drops per reason.

    max_answer_words stays well under what max_tokens can hold (512 tokens ≈ 380 words), so an answer cut off by
    the token limit is dropped as too long rather than kept half-finished.
    """
    rng = random.Random(seed)
    seeds = [" ".join(t["instruction"].split()) for t in seed_tasks]
    pool = list(seeds)  # every instruction a new one must differ from
    generated: list[str] = []  # kept and answered: the paper's model-generated in-context examples
    pairs: list[QAPair] = []
    drops: Counter = Counter()
    for round_ in range(max_rounds):
        if len(pairs) >= target:
            break
        prompts = [
            tasks_prompt(_sample(seeds, generated, in_context, rng), NEW_PER_PROMPT) for _ in range(prompts_per_round)
        ]
        replies = teacher.complete(prompts, max_tokens=max_tokens, temperature=temperature, seed=seed + round_)
        kept: list[str] = []
        for reply in replies:
            candidates = parse_tasks(reply) if reply is not None else []
            if reply is None:
                drops["request failed"] += 1
            elif not candidates:
                drops["unparseable"] += 1
            for instruction in candidates:
                reason = reject_reason(instruction)
                if reason is None and max_rouge_l(instruction, pool) >= rouge_threshold:
                    reason = "too similar (ROUGE-L)"
                if reason:
                    drops[reason] += 1
                else:
                    pool.append(instruction)
                    kept.append(instruction)
        for pair in _answer(kept, teacher, retrieve, max_tokens, max_answer_words, seed, drops):
            generated.append(pair.question)
            pairs.append(pair)
    if len(pairs) > target:
        drops["over target"] += len(pairs) - target
    return pairs[:target], drops


def _sample(seeds: list[str], generated: list[str], k: int, rng: random.Random) -> list[str]:
    """k examples: a quarter generated (2 of 8 in the paper) once there are any, the rest seeds, shuffled."""
    own = rng.sample(generated, min(k // 4, len(generated)))
    picked = rng.sample(seeds, min(k - len(own), len(seeds))) + own
    rng.shuffle(picked)
    return picked


def _answer(
    instructions: list[str],
    teacher: Teacher,
    retrieve: Callable[[str], list[Chunk]] | None,
    max_tokens: int,
    max_answer_words: int,
    seed: int,
    drops: Counter,
) -> list[QAPair]:
    passages = {i: retrieve(i) for i in instructions} if retrieve else {}
    if retrieve:
        drops["no passages retrieved"] += sum(not p for p in passages.values())
        instructions = [i for i in instructions if passages[i]]
    conversations = [
        [{"role": "system", "content": CONTEXT_SYSTEM}, {"role": "user", "content": with_context(i, passages[i])}]
        if retrieve
        else [{"role": "system", "content": ANSWER_SYSTEM}, {"role": "user", "content": i}]
        for i in instructions
    ]
    # Greedy, as the paper generates instances: the answer should be the teacher's best, not a varied one.
    replies = teacher.complete(conversations, max_tokens=max_tokens, temperature=0.0, seed=seed)
    pairs = []
    for instruction, reply in zip(instructions, replies, strict=True):
        answer = (reply or "").strip()
        if reply is None:
            drops["request failed"] += 1
        elif not answer:
            drops["empty answer"] += 1
        elif word_count(answer) > max_answer_words:
            drops["too long"] += 1
        elif retrieve and not is_grounded(answer, "\n".join(p.text for p in passages[instruction])):
            drops["not grounded"] += 1
        elif retrieve:
            best = _best_passage(answer, passages[instruction])
            pairs.append(QAPair(instruction, answer, "self_instruct", best.id, best.source, "self_instruct"))
        else:
            pairs.append(QAPair(instruction, answer, "self_instruct", "", "", "self_instruct"))
    return pairs


def _best_passage(answer: str, passages: list[Chunk]) -> Chunk:
    """The passage sharing most of the answer's words; the higher-ranked one on a tie."""
    words = set(tokens(answer))
    return max(passages, key=lambda p: len(words & set(tokens(p.text))))
