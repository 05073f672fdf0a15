import pytest

from hangjia.eval.scoring import abstains, is_correct, matches, normalize


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("KP-2210", "kp 2210"),
        ("60 °C", "60 c"),
        ("dB(A)", "db a"),
        ("1,500 EUR", "1500 eur"),
        ("It costs 38.50.", "it costs 38.50"),
        ("ＫＰ２２１０", "kp2210"),  # NFKC folds full-width characters
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
