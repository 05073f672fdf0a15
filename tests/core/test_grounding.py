"""The grounding check in Chinese as in English: an answer's numbers and most of its content must be in the passage."""

from __future__ import annotations

from hangjia.core.grounding import is_grounded, tokens, word_count

PASSAGE_ZH = "故障代码E1：点火失败。请检查燃气阀门是否打开，LS-13Q的最大热负荷为26千瓦。"


def test_chinese_answers_are_grounded_by_their_character_pairs():
    assert tokens("E1表示点火失败") == ["e1", "表示", "示点", "点火", "火失", "失败"]
    assert is_grounded("点火失败", PASSAGE_ZH)
    assert is_grounded("检查燃气阀门", PASSAGE_ZH)
    assert is_grounded("26千瓦", PASSAGE_ZH)
    assert not is_grounded("熄火保护", PASSAGE_ZH)  # no pair of it is in the passage
    assert not is_grounded("30千瓦", PASSAGE_ZH)  # a number the passage does not state
    assert not is_grounded("排水泵堵塞", PASSAGE_ZH)


def test_english_is_checked_as_before():
    assert tokens("Error E24: drain-pump blocked") == ["error", "e24", "drain", "pump", "blocked"]
    assert is_grounded("drain pump blocked", "Error E24 means the drain pump is blocked.")
    assert not is_grounded("water inlet fault", "Error E24 means the drain pump is blocked.")


def test_a_chinese_character_counts_as_a_word_so_long_answers_are_caught():
    assert word_count("Drain pump blocked") == 3
    assert word_count("排水泵堵塞") == 5
    assert word_count("LS-60A 的价格") == 4
