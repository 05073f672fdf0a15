"""What text matching shares across layers: the CJK character ranges, answer normalisation, and stop words.

Stop words: one base list of English function and question words, and per user a named extension, so no word
is listed twice. BM25 (corpus/index.py) drops `BM25_STOPWORDS` from chunks and queries; grounding and
paraphrase (instruct/) skip `GROUNDING_STOPWORDS` when they look for an answer's or a question's content words.
Changing either set changes what is retrieved or kept, and so the evaluation's numbers.
"""

from __future__ import annotations

import re
import unicodedata

# Character-class ranges (for inside [...]) of the scripts that write no spaces between words, so each character
# counts as a word: Hiragana and Katakana, Han extension A, Han, CJK compatibility ideographs, Han extension B
# and later. Hangul is apart: Korean separates words with spaces, so only some tokenisers split it per syllable.
HAN_KANA_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
HANGUL_RANGES = "\uac00-\ud7af"
CJK_RANGES = HAN_KANA_RANGES + HANGUL_RANGES

_HAN_KANA = re.compile(f"[{HAN_KANA_RANGES}]")
# A run of Chinese (or Japanese) characters: text with no spaces to split words on.
HAN_KANA_RUN = re.compile(f"[{HAN_KANA_RANGES}]+")


def split_han_kana(text: str, words, run_terms) -> list[str]:
    """Terms of mixed text: `words(segment)` for the stretches between Chinese/Japanese runs, `run_terms(run)` for
    each run, in text order. BM25 and the grounding check split their Chinese this way, each with its own terms."""
    terms: list[str] = []
    last = 0
    for run in HAN_KANA_RUN.finditer(text):
        terms += words(text[last : run.start()])
        terms += run_terms(run.group())
        last = run.end()
    return terms + words(text[last:])


_LETTER = re.compile(r"[^\W\d_]")


def is_chinese(text: str) -> bool:
    """Whether `text` is written in Chinese: at least two Han (or kana) characters, and at least a third of its
    letters ("LS-60A的保修期是多久？" is; "What does 排水 mean?" is not)."""
    han = len(_HAN_KANA.findall(text))
    return han >= 2 and 3 * han >= len(_LETTER.findall(text))


_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def join_thousands(text: str) -> str:
    """Drop thousands separators: "1,500" -> "1500" (a comma before exactly three digits)."""
    return _THOUSANDS_COMMA.sub("", text)


_CJK_CHAR = re.compile(f"([{CJK_RANGES}])")


def normalize(text: str) -> str:
    """An answer reduced for comparison: NFKC, lower case, no thousands commas, only a-z 0-9 . + / : and CJK
    characters kept (the point only as a decimal point, the colon only between digits), single spaces; each CJK
    character stands apart, as a word of its own, since Chinese and Japanese write no spaces: "排水泵堵塞" ->
    "排 水 泵 堵 塞", so containment works whole-token as it does for English. The sample domain's scoring rules
    (examples/kestrel/README.md)."""
    text = join_thousands(unicodedata.normalize("NFKC", text).lower())
    text = re.sub(rf"[^a-z0-9.+/:{CJK_RANGES}]+", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep only decimal points
    text = re.sub(r"(?<!\d):|:(?!\d)", " ", text)  # and colons only in times (10:30): "答：LS-80A" is an answer
    text = _CJK_CHAR.sub(r" \1 ", text)
    return " ".join(text.split())


# English function words and question words that every passage contains.
STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "should",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    }
)

# Retrieval: pronouns, prepositions and quantifiers too, and "tell"/"please": "Can you tell me the price of
# KP-2210, please?" should score on "price" and the code, not on words every chunk or request contains.
BM25_STOPWORDS = STOPWORDS | frozenset(
    {
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "any",
        "because",
        "before",
        "being",
        "below",
        "between",
        "both",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "further",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "nor",
        "now",
        "off",
        "once",
        "only",
        "other",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "please",
        "same",
        "she",
        "some",
        "tell",
        "theirs",
        "themselves",
        "through",
        "too",
        "under",
        "until",
        "up",
        "very",
        "while",
        "yours",
        "yourself",
        "yourselves",
    }
)

# Grounding and keyword paraphrases: modal verbs and "yes" carry no content of an answer or a question.
GROUNDING_STOPWORDS = STOPWORDS | frozenset({"may", "might", "must", "shall", "yes"})
