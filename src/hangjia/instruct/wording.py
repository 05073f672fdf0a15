"""How extracted questions are worded: clean titles, sentence-case phrases, and the question templates.

A question about Chinese fields or labels is asked in Chinese ("LS-60A的价格是什么？"), any other in English."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from hangjia.core.words import is_chinese
from hangjia.corpus.documents import Document


def clean_title(title: str) -> str:
    """ "3. WATER HARDNESS AND SALT" -> "Water Hardness and Salt"; codes such as "P01" keep their case."""
    title = re.sub(r"^\d+(\.\d+)*\.?\s+", "", " ".join(title.split()))
    if title.upper() == title:
        small = {"and", "or", "of", "the", "a", "an", "in", "on", "for", "to", "with", "without"}
        words = [
            w if re.search(r"\d", w) else w.lower() if w.lower() in small else w.capitalize() for w in title.split()
        ]
        title = " ".join(words)
    return title[:1].upper() + title[1:]


def phrase(text: str) -> str:
    """Lower-case a sentence-case phrase ("Door seal" -> "door seal"), keep names ("Kestrel Aria")."""
    words = text.split()
    if words and words[0][1:].islower() and not any(w[:1].isupper() for w in words[1:]):
        return text[:1].lower() + text[1:]
    return text


def field_phrase(name: str) -> str:
    return phrase(" ".join(re.split(r"[_.]+", name)).strip())


def in_chinese(field: str, label: str) -> bool:
    """Whether a question about `field` of `label` is asked in Chinese: the field is, or the two together are."""
    return is_chinese(field) or is_chinese(f"{field} {label}")


def ask(field: str, label: str) -> str:
    """ "What is the price of X?", "What are the services of X?", "What you can do for E24?"; "X的价格是什么？" """
    if in_chinese(field, label):
        return f"{label}的{field}是什么？"
    if re.match(r"(what|how|which|when|where|who)\b", field, re.IGNORECASE):
        return f"{field[:1].upper()}{field[1:]} for {label}?"
    return f"What {'are' if re.search(r'[^s]s$', field) else 'is'} the {field} of {label}?"


def ask_in(term: str, where: str) -> str:
    """ "Pressure: what is the fill pressure?"; the section names the context the term lacks. "安装：排烟管是什么？" """
    if in_chinese(term, where):
        return f"{where}：{term}是什么？" if where and where != term else f"{term}是什么？"
    question = f"what {'are' if re.search(r'[^s]s$', term) else 'is'} the {term}?"
    return f"{where}: {question}" if where and where.lower() != term.lower() else question.capitalize()


def doc_title(doc: Document) -> str:
    if doc.format in ("csv", "jsonl") or not any(s.title for s in doc.sections):
        return PurePosixPath(doc.source).stem.replace("_", " ").replace("-", " ")
    return clean_title(next(s.title for s in doc.sections if s.title)).replace(" | ", ", ")


def is_heading(unit: str, section: str) -> bool:
    return bool(section) and clean_title(unit) == clean_title(section)
