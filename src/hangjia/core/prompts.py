"""The prompt shapes shared by training, evaluation, chat and the server, in English and in Chinese.

Training and inference must see the same system prompt and the same context layout, or the
tuned model is evaluated on a format it never saw. A question written in Chinese gets the Chinese
system prompt, context labels and abstention; any other gets the English ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hangjia.core.words import is_chinese

# Short on purpose: every training example and every request carries it, and on a 2-core CPU each
# token of prompt costs training time (~40 ms per 8-example step per token for SmolLM2-135M).
SYSTEM_PROMPT = 'Answer briefly. If you do not know, say "I don\'t know".'
SYSTEM_PROMPT_ZH = "请简要回答。如果不知道，请说“我不知道”。"
# What the system prompts ask a model to say when it does not know; retrieval-aware training teaches exactly this.
ABSTENTION = "I don't know"
ABSTENTION_ZH = "我不知道"
# What the answer guard says instead of an answer the documents do not support (llm/guard.py).
NOT_IN_DOCUMENTS = "The documents do not say."
NOT_IN_DOCUMENTS_ZH = "文档中没有说明。"


class Passage(Protocol):
    source: str
    text: str


def system_prompt(question: str) -> str:
    return SYSTEM_PROMPT_ZH if is_chinese(question) else SYSTEM_PROMPT


def abstention(question: str) -> str:
    """The answer that says "I don't know", in the question's language."""
    return ABSTENTION_ZH if is_chinese(question) else ABSTENTION


def not_in_documents(question: str) -> str:
    """The guard's reply when the documents do not support an answer, in the question's language."""
    return NOT_IN_DOCUMENTS_ZH if is_chinese(question) else NOT_IN_DOCUMENTS


def question_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt(question)}, {"role": "user", "content": question}]


def with_context(question: str, passages: Sequence[Passage]) -> str:
    """The user turn when RAG is on: numbered passages with their source, then the question."""
    if not passages:
        return question
    blocks = "\n\n".join(f"[{i}] ({p.source}) {p.text.strip()}" for i, p in enumerate(passages, start=1))
    if is_chinese(question):
        return f"参考资料：\n{blocks}\n\n问题：{question}"
    return f"Context:\n{blocks}\n\nQuestion: {question}"


def ensure_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Prepend the shared system prompt (in the language of the last user turn) unless the caller brought one."""
    if messages and messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": system_prompt(last_question(messages))}, *messages]


def last_question(messages: Sequence[dict[str, str]]) -> str:
    """The last user turn's text: the question retrieval, the guard and the language note look at ("" if none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
