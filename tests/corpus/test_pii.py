"""PII redaction: every kind is found in English and Chinese text, and ordinary numbers are left alone."""

from __future__ import annotations

import pytest

from hangjia.corpus.pii import PLACEHOLDERS, redact


def cn_id(first17: str) -> str:
    """First 17 digits plus the GB 11643 check character: weights 2^(17-i) mod 11, check (12 - sum mod 11) mod 11."""
    total = sum(int(d) * (2 ** (17 - i) % 11) for i, d in enumerate(first17))
    check = (12 - total % 11) % 11
    return first17 + ("X" if check == 10 else str(check))


def luhn(prefix: str) -> str:
    """prefix plus its Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(prefix)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return prefix + str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    return number[-1].isdigit() and luhn(number[:-1]) == number


def wrong_last_digit(number: str) -> str:
    last = number[-1]
    return number[:-1] + ("0" if last == "X" else str((int(last) + 1) % 10))


VALID_ID = cn_id("11010519491231002")  # Beijing Xicheng, born 31 Dec 1949
VALID_CARD = luhn("622202123456789")  # a 16-digit UnionPay-style number


def test_helpers_agree_with_published_examples():
    assert luhn("411111111111111") == "4111111111111111"  # the Visa test number
    assert cn_id("11010519491231002") == "11010519491231002X"  # the GB 11643 standard's own example


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("Write to jane.doe@example.com for details.", "Write to [EMAIL] for details.", "email"),
        ("Mail first.last+tag@mail.example.co.uk.", "Mail [EMAIL].", "email"),
        ("电话13812345678或邮箱a@b.cn", "电话[PHONE]或邮箱[EMAIL]", None),
        ("Mobile 138-1234-5678 (office)", "Mobile [PHONE] (office)", "phone"),
        ("手机：+86 138 1234 5678。", "手机：[PHONE]。", "phone"),
        ("拨打0086-13812345678咨询", "拨打[PHONE]咨询", "phone"),
        ("座机010-12345678，分机8", "座机[PHONE]，分机8", "phone"),
        ("Shenzhen office 0755-1234567.", "Shenzhen office [PHONE].", "phone"),
        (
            "London: +44 20 7946 0958, San Francisco: +1 (415) 555-0132.",
            "London: [PHONE], San Francisco: [PHONE].",
            "phone",
        ),
        ("phone: 0471 552 010", "phone: [PHONE]", "phone"),
        (
            "call the Kestrel hotline on 0800 318 4400 (Mon–Fri 07:30–20:00).",
            "call the Kestrel hotline on [PHONE] (Mon–Fri 07:30–20:00).",
            "phone",
        ),
        (f"身份证号{VALID_ID}，请核对", "身份证号[ID]，请核对", "cn_id"),
        (f"ID: {cn_id('44030619900307123')}.", "ID: [ID].", "cn_id"),
        ("Visa 4111 1111 1111 1111 expires", "Visa [CARD] expires", "bank_card"),
        (f"卡号{VALID_CARD}已绑定", "卡号[CARD]已绑定", "bank_card"),
        ("Amex 3782 822463 10005", "Amex [CARD]", "bank_card"),
        ("card 4111-1111-1111-1111.", "card [CARD].", "bank_card"),
        ("Login from 192.168.1.10 at 08:00.", "Login from [IP] at 08:00.", "ip"),
        ("服务器地址10.0.0.254，端口8080", "服务器地址[IP]，端口8080", "ip"),
        ("IPv6 2001:db8::8a2e:370:7334 and fe80::1ff:fe23:4567:890a.", "IPv6 [IP] and [IP].", "ip"),
    ],
)
def test_redacts_each_kind(text, expected, kind):
    redacted, counts = redact(text)
    assert redacted == expected
    if kind:
        assert set(counts) == {kind}


@pytest.mark.parametrize(
    "text",
    [
        "Total 1,140.00 EUR including VAT",
        "Drain pump KP-2210: 38.50",
        "Serial number 62-2401-03317 is affected",
        "serial numbers 12-2403-00001 to 12-2406-99999",
        "Installed on 2024-02-15, inspected 15.02.2024",
        "firmware v2.3.1 (build 2.3.1-rc2)",
        "Opening hours 08:00–17:00, Mon-Fri 07:30-20:00, lunch 12:30:00",
        "Minimum clearance 900 mm, cable 3 x 6 mm2, 4.15 MPa",
        "Thermora HP-08M and HP-12M, document KHA-IG-HP-03",
        "Order 4111111111111112 shipped",  # fails Luhn
        "Order number 1234567890123456 is confirmed",  # fails Luhn
        "Tracking 9400 1000 0000 0000 0000 00",
        "See section 3.2.1.4 and table 4.5",
        "Outdoor temperature from -20 to +35 C",
        "MAC 00:1A:2B:3C:4D:5E, std::vector, ratio 1:2:3",
        "call us on 2024-02-15 for an appointment",
        "call a KCI within 30 days; call-out fee 79 EUR",
        "产品编号20240215001，价格1140.00元，重量38.5公斤",
        "The hotline is open 24 hours, 7 days a week.",
    ],
)
def test_leaves_ordinary_numbers_alone(text):
    assert redact(text) == (text, {})


def test_cn_id_needs_a_right_check_digit_and_a_real_birth_date():
    wrong = wrong_last_digit(VALID_ID)
    assert redact(f"证件号{wrong}")[0] == f"证件号{wrong}"
    bad_month = cn_id("11010519491331002")  # month 13, checksum right
    future = cn_id("11010521991231002")  # born in 2199
    bad_region = cn_id("99010519491231002")  # no province 99
    for number in (bad_month, future, bad_region):
        assert redact(f"ID {number}")[0] == f"ID {number}"
    assert redact(f"ID {VALID_ID.lower()}")[0] == "ID [ID]"  # a lower-case x check character


def test_bank_card_needs_luhn():
    assert redact(f"card {VALID_CARD}")[0] == "card [CARD]"
    assert redact(f"card {wrong_last_digit(VALID_CARD)}")[0] == f"card {wrong_last_digit(VALID_CARD)}"


def test_overlaps_go_to_the_higher_priority_longer_match():
    # A Guangdong ID number (starts with 4 like a Visa card) that also passes Luhn: it counts as an ID only.
    number = next(n for seq in range(100, 1000) if luhn_ok(n := cn_id(f"44030619900307{seq}")))
    assert redact(f"ID {number}") == ("ID [ID]", {"cn_id": 1})
    assert redact(f"ID {number}", kinds=["bank_card"]) == (f"ID {number}", {})
    # An e-mail whose local part is a phone number is one e-mail, not a phone plus a fragment.
    assert redact("13812345678@163.com") == ("[EMAIL]", {"email": 1})
    assert redact("13812345678@163.com", kinds=["phone"]) == ("13812345678@163.com", {})


def test_counts_per_kind():
    text = "Call 13812345678 or +44 20 7946 0958, mail a@b.cn, server 10.1.2.3."
    redacted, counts = redact(text)
    assert counts == {"phone": 2, "email": 1, "ip": 1}
    assert redacted == "Call [PHONE] or [PHONE], mail [EMAIL], server [IP]."


def test_placeholders_and_kinds_are_configurable():
    text = "Mail a@b.cn or call 13812345678."
    assert redact(text, placeholders={"email": "<email>"})[0] == "Mail <email> or call [PHONE]."
    assert redact(text, kinds=["email"]) == ("Mail [EMAIL] or call 13812345678.", {"email": 1})
    assert redact(text, kinds=[]) == (text, {})
    assert set(PLACEHOLDERS) == {"email", "phone", "cn_id", "bank_card", "ip"}


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown PII kind.*passport"):
        redact("x", kinds=["passport"])
    with pytest.raises(ValueError, match="Unknown PII kind"):
        redact("x", placeholders={"pasport": "[P]"})


def test_allowed_published_contacts_are_kept_and_others_redacted():
    text = "Recall hotline: 0800 318 4499. Write to recall@kestrel-home.example or call Anna on +44 20 7946 0958."
    out, counts = redact(text, allow=["08003184499", "RECALL@kestrel-home.example"])
    assert "0800 318 4499" in out and "recall@kestrel-home.example" in out
    assert "+44 20 7946 0958" not in out and counts == {"phone": 1}
