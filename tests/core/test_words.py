"""The shared stop words: BM25 and grounding keep exactly the sets they had when they were separate lists (BM25's
changes retrieval and so the evaluation's numbers), built from one base list without repeating a word."""

from __future__ import annotations

from hangjia.core.words import BM25_STOPWORDS, GROUNDING_STOPWORDS, STOPWORDS, join_thousands, normalize


def test_stopword_sets_are_pinned():
    assert (len(STOPWORDS), len(BM25_STOPWORDS), len(GROUNDING_STOPWORDS)) == (64, 128, 69)
    assert STOPWORDS == BM25_STOPWORDS & GROUNDING_STOPWORDS
    assert {"tell", "please", "me", "about"} <= BM25_STOPWORDS - GROUNDING_STOPWORDS
    assert {"may", "might", "must", "shall", "yes"} == GROUNDING_STOPWORDS - BM25_STOPWORDS


def test_thousands_and_normalize():
    assert join_thousands("1,500 and 12,3456 and 1,234,567") == "1500 and 12,3456 and 1234567"
    assert normalize("Ｋestrel KP-2210: 1,500.00 EUR.") == "kestrel kp 2210 1500.00 eur"
