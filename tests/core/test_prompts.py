"""The prompts speak the question's language: system prompt, context labels and abstention, English unchanged."""

from __future__ import annotations

from hangjia.core.prompts import (
    ABSTENTION,
    ABSTENTION_ZH,
    SYSTEM_PROMPT,
    SYSTEM_PROMPT_ZH,
    abstention,
    ensure_system,
    question_messages,
    with_context,
)
from hangjia.core.words import is_chinese
from hangjia.eval.scoring import abstains


class P:
    def __init__(self, source: str, text: str):
        self.source, self.text = source, text


def test_chinese_is_told_from_english_with_codes_and_names_mixed_in():
    assert is_chinese("LS-60A的保修期是多久？")
    assert is_chinese("E1代表什么故障")
    assert not is_chinese("What does 排水 mean on a Kestrel dishwasher?")
    assert not is_chinese("What does error E24 mean?")
    assert not is_chinese("泵")  # one character is not enough to say


def test_english_prompts_are_as_before():
    assert question_messages("What does E24 mean?")[0]["content"] == SYSTEM_PROMPT
    assert with_context("What does E24 mean?", [P("a.md", " E24: drain pump blocked. ")]) == (
        "Context:\n[1] (a.md) E24: drain pump blocked.\n\nQuestion: What does E24 mean?"
    )
    assert abstention("What does E24 mean?") == ABSTENTION == "I don't know"
    assert f'"{ABSTENTION}"' in SYSTEM_PROMPT


def test_a_chinese_question_gets_the_chinese_prompt_labels_and_abstention():
    q = "E1代表什么故障？"
    assert question_messages(q)[0]["content"] == SYSTEM_PROMPT_ZH
    passage = P("故障代码.md", "E1：点火失败")
    assert with_context(q, [passage]) == "参考资料：\n[1] (故障代码.md) E1：点火失败\n\n问题：" + q
    assert abstention(q) == ABSTENTION_ZH and ABSTENTION_ZH in SYSTEM_PROMPT_ZH and abstains(ABSTENTION_ZH)
    # The system prompt follows the last user turn; a caller's own system prompt is kept.
    turns = [{"role": "user", "content": "Hello"}, {"role": "user", "content": q}]
    assert ensure_system(turns)[0]["content"] == SYSTEM_PROMPT_ZH
    own = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": q}]
    assert ensure_system(own) == own
