"""Replace personal data (e-mails, phone numbers, Chinese ID numbers, bank cards, IP addresses) with placeholders.

Every kind is found by a candidate pattern plus a check (checksum, birth date, Luhn, octet range, number length), so
prices, dates, part and serial numbers stay as they are. Patterns use ASCII boundaries, not `\\b`, because Chinese
characters count as word characters: "电话13812345678或邮箱a@b.cn" must still match.

Published contacts (a hotline, a service centre's landline, service@) can be kept: those listed in `allow`, and with
`keep_org` the phone numbers and e-mails that contacts.py judges to be the organisation's rather than a person's.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date

import phonenumbers

from hangjia.corpus.contacts import CN_MOBILE_NUMBER, ORGANISATIONAL, RULES, contact_at, keep_rule

PLACEHOLDERS: dict[str, str] = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "cn_id": "[ID]",
    "bank_card": "[CARD]",
    "ip": "[IP]",
}

# Overlaps go to the earlier kind here, then to the longer match: an ID number holds digit runs that look like a phone
# or a card, and an e-mail's local part may be a phone number.
PRIORITY = ("email", "cn_id", "bank_card", "ip", "phone")

Span = tuple[int, int]

_B = r"(?<![0-9A-Za-z])(?<![0-9][.,-])"  # not inside a word, a decimal number or a dashed code
_A = r"(?![0-9A-Za-z])(?![.,-][0-9])"

# --- e-mail ---------------------------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![A-Za-z0-9-])"
)

# --- phone ----------------------------------------------------------------------------------------------------------
_CN_MOBILE = re.compile(_B + CN_MOBILE_NUMBER + _A)
_CN_LANDLINE = re.compile(_B + r"(?:0\d{2,3}-|\(0\d{2,3}\)[ ]?)\d{7,8}" + _A)
# National numbers in other formats ("0800 318 4400", "0471 552 010") look like any grouped digits, so they are only
# taken right after a word that announces a phone number: "phone: …", "hotline on …", "call us on …", "电话：…".
_CUE = re.compile(
    r"(?i:\b(?:tel|phone|telephone|mobile|cell|fax|hotline|helpline)\b"
    r"|\b(?:call|dial|ring|contact|reach)\b)"
    r"|电话|電話|手机|手機|热线|熱線|致电|致電|拨打|撥打|传真|傳真|座机"
)
_CUED_NUMBER = re.compile(r"[^\d\n]{0,20}?(\(?\d{1,5}\)?(?:[ .-]\d{2,8}){1,4}|\d{8,12})" + _A)
_PLUS = re.compile(r"(?<![0-9A-Za-z+])\+(?=[ (]?\d)")
_DATE_LIKE = re.compile(r"\d{4}([./-])\d{1,2}\1\d{1,2}|\d{1,2}([./-])\d{1,2}\2\d{2,4}")

# --- Chinese resident ID (GB 11643-1999) ------------------------------------------------------------------------------
_CN_ID = re.compile(
    _B + r"[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]" + r"(?![0-9A-Za-z])"
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"  # check character for (weighted sum mod 11)
_PROVINCES = {11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46}
_PROVINCES |= {50, 51, 52, 53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83, 91}

# --- bank card ------------------------------------------------------------------------------------------------------
_CARD = re.compile(
    _B
    + r"(?:\d{13,19}"  # 6222021234567890
    + r"|\d{4}([ -])\d{4}(?:\1\d{4}){1,2}(?:\1\d{1,3})?(?!\1\d)"  # 4111 1111 1111 1111 (4-4-4-4, up to 4-4-4-4-3)
    + r"|3[47]\d\d([ -])\d{6}\2\d{5})"  # American Express 4-6-5
    + _A
)
_CARD_FIRST_DIGITS = "23456"  # Mastercard 2/5, Amex/JCB/Diners 3, Visa 4, Discover/UnionPay 6

# --- IP addresses ---------------------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(r"(?<![0-9A-Za-z.])" + _OCTET + r"(?:\." + _OCTET + r"){3}(?![0-9A-Za-z]|\.\d)")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?(?![0-9A-Za-z:])"
)


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def _valid_birth_date(digits8: str) -> bool:
    try:
        born = date(int(digits8[:4]), int(digits8[4:6]), int(digits8[6:]))
    except ValueError:
        return False
    return date(1850, 1, 1) <= born <= date.today()


def _looks_like_cn_id(number: str) -> bool:
    """Region and birth date of an ID number, whatever its check character."""
    return len(number) == 18 and int(number[:2]) in _PROVINCES and _valid_birth_date(number[6:14])


def cn_id_valid(number: str) -> bool:
    """An 18-character resident ID with a known province, a real birth date and the right check character."""
    number = number.upper()
    if not re.fullmatch(r"\d{17}[\dX]", number) or not _looks_like_cn_id(number):
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _emails(text: str) -> Iterator[Span]:
    for m in _EMAIL.finditer(text):
        yield m.span()


def _cn_ids(text: str) -> Iterator[Span]:
    for m in _CN_ID.finditer(text):
        if cn_id_valid(m.group()):
            yield m.span()


def _bank_cards(text: str) -> Iterator[Span]:
    for m in _CARD.finditer(text):
        digits = _digits(m.group())
        if not 13 <= len(digits) <= 19 or digits[0] not in _CARD_FIRST_DIGITS or not luhn_valid(digits):
            continue
        if _looks_like_cn_id(digits):  # an ID number with a wrong check digit is a typo, not a card
            continue
        yield m.span()


def _ips(text: str) -> Iterator[Span]:
    for m in _IPV4.finditer(text):
        if any(len(octet) > 1 for octet in m.group().split(".")):  # "3.2.1.4" is a section number, not an address
            yield m.span()
    for m in _IPV6.finditer(text):
        candidate = m.group()
        if sum(c in "0123456789abcdefABCDEF" for c in candidate) < 4:  # "::1", "a::b" (C++ scope) are not personal
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:  # "08:00:00" and MAC addresses fail here
            continue
        yield m.span()


def _cued_numbers(text: str) -> Iterator[Span]:
    for cue in _CUE.finditer(text):
        m = _CUED_NUMBER.match(text, cue.end())
        if not m:
            continue
        start = end = m.start(1)
        n = 0
        for group in re.finditer(r"\(?\d+\)?", m.group(1)):  # "0800 318 4400 24 hours": stop before the 24
            if n + len(_digits(group.group())) > 12:
                break
            n += len(_digits(group.group()))
            end = m.start(1) + group.end()
        if n >= 8 and not _DATE_LIKE.fullmatch(text[start:end]):
            yield start, end


def _phones(text: str) -> Iterator[Span]:
    for pattern in (_CN_MOBILE, _CN_LANDLINE):
        for m in pattern.finditer(text):
            yield m.span()
    yield from _cued_numbers(text)
    for plus in _PLUS.finditer(text):  # international numbers: +CC and a number whose length fits that country
        # phonenumbers scans slowly (~2 µs a character), so it only reads the 40 characters after each "+".
        lo = max(plus.start() - 1, 0)
        window = text[lo : plus.start() + 40]
        for m in phonenumbers.PhoneNumberMatcher(window, None, leniency=phonenumbers.Leniency.POSSIBLE):
            reason = phonenumbers.is_possible_number_with_reason(m.number)
            if lo + m.start == plus.start() and reason == phonenumbers.ValidationResult.IS_POSSIBLE:
                yield lo + m.start, lo + m.end
            break


_FINDERS: dict[str, Callable[[str], Iterator[Span]]] = {
    "email": _emails,
    "phone": _phones,
    "cn_id": _cn_ids,
    "bank_card": _bank_cards,
    "ip": _ips,
}


def find(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) matches of every kind, by priority then length, sorted by position."""
    candidates = [(start, end, kind) for kind, finder in _FINDERS.items() for start, end in finder(text)]
    candidates.sort(key=lambda c: (PRIORITY.index(c[2]), c[0] - c[1], c[0]))
    taken: list[tuple[int, int, str]] = []  # kept sorted by start, never overlapping
    for cand in candidates:
        i = bisect.bisect_left(taken, cand[:2], key=lambda t: t[:2])
        if (i > 0 and taken[i - 1][1] > cand[0]) or (i < len(taken) and taken[i][0] < cand[1]):
            continue
        taken.insert(i, cand)
    return taken


def _allow_key(value: str) -> str:
    """How an allowed value is compared: digits only for numbers ("0800 318 4499" = "08003184499"), else casefolded."""
    digits = re.sub(r"\D", "", value)
    return digits if len(digits) >= 6 else value.strip().casefold()


ALLOW_LIST = "allow_list"
"""The rule name of a contact kept because `allow` lists it."""
KEEP_RULES = {ALLOW_LIST: "listed in ingest.pii_allow"} | {name: RULES[name] for name in ORGANISATIONAL}
"""Why each rule keeps a contact, for the ingest report."""
CONTACT_KINDS = ("phone", "email")  # the kinds contacts.py may keep; IDs, cards and IPs are always personal


@dataclass(frozen=True)
class Kept:
    """A contact left as it was, and the rule that kept it (ALLOW_LIST, or a name in contacts.ORGANISATIONAL)."""

    kind: str
    value: str
    rule: str


def redact(
    text: str,
    placeholders: dict[str, str] | None = None,
    kinds: Iterable[str] | None = None,
    allow: Iterable[str] = (),
    keep_org: bool = False,
) -> tuple[str, Counter[str]]:
    """Replace personal data with placeholders; return the new text and how many of each kind were replaced.

    `placeholders` overrides entries of PLACEHOLDERS; `kinds` limits which kinds are replaced (overlaps are still
    resolved among all kinds, so an e-mail made of a phone number is never half-replaced). `allow` lists published
    contacts that are not personal data (a company hotline, a support address) and are kept as they are; with
    `keep_org`, so are the phone numbers and e-mails that contacts.py judges to be the organisation's.
    """
    redacted, counts, _ = redact_keeping(text, placeholders, kinds, allow, keep_org)
    return redacted, counts


def redact_keeping(
    text: str,
    placeholders: dict[str, str] | None = None,
    kinds: Iterable[str] | None = None,
    allow: Iterable[str] = (),
    keep_org: bool = False,
) -> tuple[str, Counter[str], list[Kept]]:
    """`redact`, and also the contacts it kept (allowed, or the organisation's), each with the rule that kept it."""
    allowed = {_allow_key(a) for a in allow}
    names = {**PLACEHOLDERS, **(placeholders or {})}
    wanted = set(PLACEHOLDERS if kinds is None else kinds)
    unknown = (set(names) | wanted) - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(f"Unknown PII kind(s) {sorted(unknown)}; use some of {sorted(PLACEHOLDERS)}.")
    counts: Counter[str] = Counter()
    kept: list[Kept] = []
    parts: list[str] = []
    pos = 0
    found = find(text)
    for i, (start, end, kind) in enumerate(found):
        if kind not in wanted:
            continue
        rule = ALLOW_LIST if _allow_key(text[start:end]) in allowed else None
        if rule is None and keep_org and kind in CONTACT_KINDS:
            # The words beside a contact stop at its neighbours: "hotline 0800 …, Anna 0471 …" labels only the first.
            lo = found[i - 1][1] if i else 0
            hi = found[i + 1][0] if i + 1 < len(found) else len(text)
            rule = keep_rule(contact_at(text, start, end, kind, lo, hi))
        if rule is not None:
            kept.append(Kept(kind, text[start:end], rule))
            continue
        parts += [text[pos:start], names[kind]]
        pos = end
        counts[kind] += 1
    parts.append(text[pos:])
    return "".join(parts), counts, kept
