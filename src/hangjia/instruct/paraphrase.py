"""Rewordings of each question (colloquial, terse, with typos, and optionally a teacher's) with the same answer.

A model tuned on one phrasing per fact learns that phrasing: users write "hey, my dishwasher shows E24, what's
wrong?" or "kp-2210 price", not the extractor's "What does E24 mean?". Rewrites never change a number or a code
("38.50", "KP-2210", "E24"): those carry the fact, and a rewrite that loses one asks a different question.
Rule-based styles are deterministic by seed; the teacher's rewrites are kept only when they pass the same check.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence

from hangjia.core.words import GROUNDING_STOPWORDS, HAN_KANA_RUN, is_chinese
from hangjia.instruct.synth import QAPair
from hangjia.llm.teacher import Teacher

STYLES = ("colloquial", "terse", "typo")

_TERM = re.compile(r"[^\W_]+(?:[-./,][^\W_]+)*")  # "KP-2210", "38.50", "1,000", "v2.14", plain words


def protected_terms(text: str) -> set[str]:
    """The numbers and codes of a text, lower-cased: every term holding a digit ("kp-2210", "e24", "38.50"); Chinese
    characters around a code are not part of it ("LS-60A的价格" protects "ls-60a")."""
    return {t.lower() for t in _TERM.findall(HAN_KANA_RUN.sub(" ", text)) if any(ch.isdigit() for ch in t)}


def keeps_terms(original: str, rewrite: str) -> bool:
    return protected_terms(original) <= protected_terms(rewrite)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold()


# ---------------------------------------------------------------- rule-based styles

_LEADS = (
    "hey, quick one — {q}",
    "quick question: {q}",
    "hi! {q}",
    "sorry if this is obvious, but {q}",
    "can you help? {q}",
    "I was wondering, {q}",
)
_TAILS = ("", "", " thanks!", " any idea?")
_CONTRACTIONS = (
    (r"\b([Ww]hat|[Ww]here|[Hh]ow|[Ww]ho|[Ww]hen) is\b", r"\1's"),
    (r"\bdoes not\b", "doesn't"),
    (r"\bdo not\b", "don't"),
    (r"\bis not\b", "isn't"),
    (r"\bcannot\b", "can't"),
)
# Only the indefinite article at the very start becomes "my": "A Kestrel dishwasher shows E24" is the asker's own;
# "the price of X" is not "my price".
_MY = re.compile(r"^((?:On|In|For|With) )?(?:A|An|a|an) (?=\w)")


# Chinese: a polite lead-in and tail; a keyword query drops the question words and 的.
_LEADS_ZH = ("请问，{q}", "你好，{q}", "想问一下，{q}", "麻烦问下：{q}", "我想了解一下，{q}", "打扰一下，{q}")
_TAILS_ZH = ("", "", "谢谢！", "有谁知道吗？")
_ASK_ZH = re.compile(
    r"请问|是什么意思|是什么|是多少|是哪个|是哪些|是哪|多少|什么|哪个|哪些|吗|呢"  # question words
    r"|[？?。，,、：:“”\"《》（）()]"  # and punctuation
)


def _lower_first(text: str) -> str:
    word = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if word[1:].islower() or len(word) == 1 else text


def colloquial(question: str, rng: random.Random) -> str:
    """A conversational lead-in, contractions, "my" for a leading "a"; the question itself stays as it was."""
    if is_chinese(question):
        return rng.choice(_LEADS_ZH).format(q=question) + rng.choice(_TAILS_ZH)
    text = question
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    text = _MY.sub(lambda m: f"{m[1]}my " if m[1] else "My ", text, count=1)
    text = rng.choice(_LEADS).format(q=_lower_first(text)) + rng.choice(_TAILS)
    return text[:1].upper() + text[1:] if rng.random() < 0.5 else text[:1].lower() + text[1:]


def terse(question: str, rng: random.Random) -> str:
    """A keyword query: content words in order, lower-cased except codes, each once ("price drain pump assembly")."""
    if "___" in question:
        return ""  # a fill-in-the-blank question without its blank asks nothing
    if is_chinese(question):  # "LS-60A的额定功率是什么？" -> "LS-60A 额定功率"
        words = list(dict.fromkeys(_ASK_ZH.sub(" ", question).replace("的", " ").split()))
        return " ".join(words) if len(words) >= 2 else ""
    words: list[str] = []
    for term in _TERM.findall(question):
        word = term if any(ch.isdigit() for ch in term) or term[1:] != term[1:].lower() else term.lower()
        if term.lower() not in GROUNDING_STOPWORDS and word not in words:
            words.append(word)
    return " ".join(words) if len(words) >= 2 else ""


def _misspell(word: str, rng: random.Random) -> str:
    """An adjacent swap, a dropped or a doubled letter; never the first letter, which readers rely on most."""
    while True:
        op, i = rng.choice(("swap", "drop", "double")), rng.randrange(1, len(word) - 1)
        if op == "swap" and word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if op == "drop":
            return word[:i] + word[i + 1 :]
        if op == "double":
            return word[:i] + word[i] + word[i:]


def typo(question: str, rng: random.Random) -> str:
    """One or two typos in plain words of 4+ letters; numbers, codes ("KP-2210", "E24") and short words are kept.
    None in Chinese, whose typos are wrong characters of the same sound, which no rule here can pick."""
    if is_chinese(question):
        return ""
    spans = [
        m.span()
        for m in _TERM.finditer(question)
        if m.group().isalpha() and len(m.group()) >= 4 and m.group()[1:].islower()
    ]
    if not spans:
        return ""
    text = question
    for start, end in sorted(rng.sample(spans, min(len(spans), rng.choice((1, 2)))), reverse=True):
        text = text[:start] + _misspell(text[start:end], rng) + text[end:]
    return text


REWRITERS: dict[str, Callable[[str, random.Random], str]] = {"colloquial": colloquial, "terse": terse, "typo": typo}


# ---------------------------------------------------------------- teacher rewrites

REWRITE_PROMPT = (
    "Rewrite the question below the way a different customer might ask it. Keep its meaning, and keep every "
    "number, code and name exactly as written. Reply with the rewritten question only.\n\nQuestion: {question}"
)
_LABEL = re.compile(r"^(?:rewritten question|rewrite|question|paraphrase)\s*:\s*", re.IGNORECASE)


def _clean_reply(reply: str) -> str:
    line = next((ln.strip() for ln in reply.strip().splitlines() if ln.strip()), "")
    return _LABEL.sub("", line).strip().strip("\"'“”").strip()


def teacher_rewrites(questions: Sequence[str], teacher: Teacher, *, seed: int = 0) -> list[tuple[str, str | None]]:
    """One teacher rewrite per question: (rewrite, None) when kept, else ("", reason) or (rewrite, reason)."""
    conversations = [[{"role": "user", "content": REWRITE_PROMPT.format(question=q)}] for q in questions]
    replies = teacher.complete(conversations, max_tokens=96, temperature=0.9, seed=seed)
    results: list[tuple[str, str | None]] = []
    for question, reply in zip(questions, replies, strict=True):
        text = _clean_reply(reply) if reply is not None else ""
        if reply is None:
            results.append(("", "teacher_failed"))
        elif not text:
            results.append(("", "teacher_empty"))
        elif _key(text) == _key(question):
            results.append((text, "teacher_unchanged"))
        elif not keeps_terms(question, text):
            results.append((text, "teacher_lost_code"))
        else:
            results.append((text, None))
    return results


# ---------------------------------------------------------------- pairs


def paraphrase_pairs(
    pairs: Sequence[QAPair],
    *,
    per_question: int = 3,
    styles: Sequence[str] = STYLES,
    teacher: Teacher | None = None,
    seed: int = 0,
) -> tuple[list[QAPair], Counter]:
    """Up to per_question rule-based rewrites of each question (styles taken in turn), plus one teacher rewrite
    per question when a teacher is given. Returns the new pairs and the count of dropped rewrites by reason."""
    unknown = [s for s in styles if s not in REWRITERS]
    if unknown:
        raise ValueError(f"Unknown paraphrase style {unknown[0]!r}; choose from {', '.join(REWRITERS)}.")
    drops: Counter = Counter()
    seen = {_key(p.question) for p in pairs}
    out: list[QAPair] = []

    def keep(pair: QAPair, text: str, kind: str) -> None:
        if not keeps_terms(pair.question, text):
            drops["lost_code"] += 1
        elif _key(text) in seen:
            drops["duplicate"] += 1
        else:
            seen.add(_key(text))
            out.append(QAPair(text, pair.answer, kind, pair.chunk_id, pair.source, generator="paraphrase"))

    usable = []
    for pair in pairs:
        if pair.prompt:  # its question is bound to the passages in its prompt
            drops["has_context"] += 1
            continue
        usable.append(pair)
        for i in range(per_question if styles else 0):
            style = styles[i % len(styles)]
            text = REWRITERS[style](pair.question, random.Random(f"{seed}:{style}:{i}:{pair.question}"))
            if text:
                keep(pair, text, style)
            else:
                drops[f"{style}_not_applicable"] += 1
    if teacher is not None and usable:
        rewrites = teacher_rewrites([p.question for p in usable], teacher, seed=seed)
        for pair, (text, reason) in zip(usable, rewrites, strict=True):
            if reason:
                drops[reason] += 1
            else:
                keep(pair, text, "teacher")
    return out, drops
