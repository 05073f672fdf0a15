import pytest

from hangjia.eval.scoring import abstains, is_correct, matches, normalize, rouge_l, token_f1, tokens


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("KP-2210", "kp 2210"),
        ("60 °C", "60 c"),
        ("dB(A)", "db a"),
        ("1,500 EUR", "1500 eur"),
        ("It costs 38.50.", "it costs 38.50"),
        ("ＫＰ２２１０", "kp2210"),  # NFKC folds full-width characters
        ("错误代码E24表示排水泵堵塞。", "错 误 代 码 e24 表 示 排 水 泵 堵 塞"),  # each CJK character a word of its own
    ],
)
def test_normalize_follows_the_sample_rules(raw, norm):
    assert normalize(raw) == norm


def test_containment_is_whole_token():
    assert matches("Error E24 means that the drain pump is blocked.", "drain pump blocked", ["drain pump is blocked"])
    assert not matches("E240", "E24", [])
    assert matches("It is 900 mm.", "900 mm", [])
    assert not matches("It is 1900 mm.", "900 mm", [])


def test_unanswerable_needs_abstention_and_abstention_is_wrong_elsewhere():
    assert is_correct("I don't know.", "unanswerable", [], "unanswerable")
    assert not is_correct("About 12 kg.", "unanswerable", [], "unanswerable")
    assert abstains("That is not mentioned in the documents")
    assert not is_correct("I don't know", "38.50 EUR", [], "numeric")


def test_chinese_answers_are_scored_not_matched_by_anything():
    # Before CJK survived normalisation, both sides normalised to "" and any Chinese reply matched any answer.
    assert not is_correct("我不知道", "排水泵堵塞", [], "lookup")
    assert not is_correct("进水阀故障", "排水泵堵塞", [], "lookup")
    assert is_correct("E24表示排水泵堵塞了。", "排水泵堵塞", [], "lookup")
    assert is_correct("排水泵堵塞", "排水泵堵塞", ["drain pump blocked"], "lookup")
    assert not matches("泵", "排水泵", [])  # containment is whole-word: one character of the answer is not it
    assert matches("答：LS-80A", "LS-80A", []) and matches("Answer:KP-2210", "KP-2210", [])
    assert matches("Opens at 08:30.", "08:30", []) and not matches("Opens at 08:30.", "08", [])


def test_a_reference_that_normalises_to_nothing_matches_nothing():
    assert not matches("", "—", [])
    assert not matches("anything at all", "…", ["?"])


def test_chinese_abstentions_are_recognised():
    assert abstains("文档中没有说明。")
    assert abstains("我不知道。")
    assert abstains("The documents do not say.")
    assert is_correct("资料中未提及该型号的价格。", "unanswerable", [], "unanswerable")
    assert not abstains("排水泵堵塞")
    assert not abstains("The status is unknowable")  # markers are whole words, not substrings


# ---- token F1 and ROUGE-L -----------------------------------------------------------------------------------------


def test_tokens_split_cjk_characters_and_keep_numbers_whole():
    assert tokens("错误代码E24表示排水泵堵塞。") == [*"错误代码", "e24", *"表示排水泵堵塞"]
    assert tokens("It costs 1,500 EUR, or 38.50 each (KP-2210).") == [
        "it",
        "costs",
        "1500",
        "eur",
        "or",
        "38.50",
        "each",
        "kp",
        "2210",
    ]
    assert tokens("ＫＰ２２１０ dB(A)") == ["kp2210", "db", "a"]


@pytest.mark.parametrize(
    ("prediction", "reference", "aliases", "f1"),
    [
        # 4 prediction tokens ("the" dropped), 3 reference tokens, 3 shared: P 3/4, R 1 -> 6/7.
        ("The drain pump is blocked.", "drain pump blocked", [], 6 / 7),
        ("pump drain blocked", "drain pump blocked", [], 1.0),  # a bag of tokens: order does not matter
        ("Aria", "Kestrel Aria", [], 2 / 3),  # P 1, R 1/2
        ("Aria", "Kestrel Aria", ["Aria"], 1.0),  # best over the aliases
        ("It is 1,500 EUR", "1500 eur", [], 2 / 3),  # P 2/4, R 1
        ("38.50", "38", [], 0.0),  # a decimal is one token
        ("", "drain pump blocked", [], 0.0),
        ("...", "", [], 1.0),  # both empty after tokenising, as SQuAD
        ("排水泵堵塞了", "排水泵堵塞", [], 10 / 11),  # 6 characters vs 5, 5 shared: P 5/6, R 1
        ("错误代码E24表示排水泵堵塞", "E24 排水泵堵塞", [], 2 / 3),  # 12 tokens vs 6, all 6 shared
        ("水泵", "排水泵", ["排水泵组件"], 0.8),  # P 1, R 2/3 against the answer; the alias gives only 4/7
    ],
)
def test_token_f1_on_hand_computed_cases(prediction, reference, aliases, f1):
    assert token_f1(prediction, reference, aliases) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("prediction", "reference", "aliases", "score"),
    [
        ("pump drain blocked", "drain pump blocked", [], 2 / 3),  # LCS 2 of 3 and 3: order matters here
        ("the drain pump is blocked", "drain pump blocked", [], 0.75),  # LCS 3, P 3/5, R 1 -> 3/4
        ("Aria", "Kestrel Aria", ["Aria"], 1.0),
        ("排水泵堵塞了", "排水泵堵塞", [], 10 / 11),
        ("堵塞排水泵", "排水泵堵塞", [], 0.6),  # LCS 排水泵 = 3 of 5 and 5
        ("completely different", "drain pump blocked", [], 0.0),
    ],
)
def test_rouge_l_on_hand_computed_cases(prediction, reference, aliases, score):
    assert rouge_l(prediction, reference, aliases) == pytest.approx(score)


PAIRS = [
    ("the cat sat on the mat", "the cat was on a mat"),
    ("Error E24 means that the drain pump is blocked", "drain pump blocked"),
    ("Replace the door seal KP 4100 and run a rinse cycle", "door seal KP 4100"),
    ("no overlap at all", "something else entirely"),
]


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_rouge_l_equals_rouge_score_on_ascii_text(prediction, reference):
    from rouge_score import rouge_scorer

    expected = rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, reference) == pytest.approx(expected)


def test_rouge_l_scores_cjk_where_rouge_scores_default_tokenizer_sees_nothing():
    from rouge_score import rouge_scorer

    pred, ref = "错误代码E24表示排水泵堵塞", "排水泵堵塞"
    default = rouge_scorer.RougeScorer(["rougeL"]).score(ref, pred)["rougeL"].fmeasure
    with_ours = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokens()).score(ref, pred)["rougeL"].fmeasure
    assert default == 0.0  # its tokenizer keeps only [a-z0-9]: "e24" against nothing
    assert rouge_l(pred, ref) == pytest.approx(with_ours) == pytest.approx(2 * (5 / 12) / (5 / 12 + 1))


class _Tokens:
    @staticmethod
    def tokenize(text):
        return tokens(text)
