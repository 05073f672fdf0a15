"""Tell an organisation's published contacts from personal ones: ingest keeps the first and redacts the rest.

A hotline, a service centre's landline in a directory or a department's mailbox is knowledge users ask for; a mobile
number, a named person's direct line or mailbox is personal data. Each phone number or e-mail that pii.py finds is
judged from its own characters and the words beside it: the PERSONAL rules first (any one redacts it), then the
ORGANISATIONAL rules (the first that fits keeps it, and its name goes into the ingest report). A contact that no rule
recognises is redacted, privacy first; `ingest.pii_allow` keeps the cases in between.

"The words beside it" are its own sentence or table cell, cut at the contact before it: in "Hotline: 0845 600 4400,
or phone 0471 552 010" the second number is not labelled by "Hotline". A contact that is a field of a
record (a JSON or CSV row, `key: value` lines, a table row under its header) also has its field name and the other
fields of its record.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers

# A mainland mobile number as written, grouped 3-4-4 or not: 138 1234 5678, +86 138-1234-5678. pii.py finds mobile
# numbers with it, and mobile_number matches a whole contact against it: "1-800-555-0199" (1-3-3-4) is not one.
CN_MOBILE_NUMBER = r"(?:(?:\+|00)86[ -]?|\(\+86\)[ -]?)?1[3-9]\d([ -]?)\d{4}\1\d{4}"

_BEFORE = 80  # characters of the sentence before a contact that are read: "For technical support call the … on "
_AFTER = 30  # and after it: "0800 318 4400 (hotline)", "139 5817 2046（手机）"
# A record is a paragraph or line of at most this many characters (a JSON service centre is ~450); longer ones are
# running text, and each contact reads only this far around it, so a document's contacts cost linear time.
_RECORD_CHARS = 4000
# Where a sentence or a cell ends; a full stop only before a space, and not after a title ("Mr. Berg").
_BOUNDARY = re.compile(r"[\n|。！？；!?;]|(?<!\bMr)(?<!\bMs)(?<!\bDr)(?<!\bMrs)(?<!\bNo)(?<!\bTel)\.(?=\s)")
# "opening_hours.sat: 09:00-13:00", "- Hotline: 0800 318 4400", "电话：0571-86917305"; not "08:00" (no space after ":").
_FIELD = re.compile(r"^\s*(?:[-*]\s+)?([^\W\d][\w .()/-]{0,40}?)\s*(?::(?=\s|$)|：)\s*(.*)$")
_NEXT_FIELD = re.compile(r"; (?=[^\W\d][\w .()/-]{0,40}?\s*(?::\s|：))")  # "; description: …", not "; DW-4500"


@dataclass(frozen=True)
class Contact:
    """A phone number or e-mail address and what is written beside it."""

    kind: str
    """"phone" or "email"."""
    value: str
    """As written."""
    before: str
    """Its sentence or cell up to it, from the contact before it at the most; "_" and "." read as spaces."""
    after: str
    """The rest of its sentence or cell (30 characters at the most), up to the contact after it."""
    key: str = ""
    """Its field name, or its column's header, when it is a value in a record or table."""
    record: list[tuple[str, str]] = field(default_factory=list)
    """The other (field name, value) pairs of that record; empty when it is in running text."""

    @property
    def near(self) -> str:
        return f"{self.before} … {self.after}"


# --- words ----------------------------------------------------------------------------------------------------------

_ORG_LABEL = re.compile(
    r"(?i:\b(?:hot ?line|help ?line|help ?desk|service ?desk|switchboard|reception|front desk|call cent(?:re|er)"
    r"|contact cent(?:re|er)|customer (?:service|care|support|cent(?:re|er)|line)|(?:technical )?support (?:line|team"
    r"|desk|cent(?:re|er))|service (?:cent(?:re|er)|line|team|department|point|counter|office|station)"
    r"|offices?|parts (?:counter|department|desk)|showroom|fax"
    r"|enquiries|inquiries)\b)"
    r"|服务热线|热线|熱線|客服|客户服务|售后|服务中心|维修中心|维修站|服务站|服务网点|营业厅|门店|专卖店|总机|前台"
    r"|办公室|总部|分公司|办事处|专线|传真|服务电话|咨询电话|投诉电话|预约电话|订购电话"
)
_PERSONAL_LABEL = re.compile(
    r"(?i:\b(?:mobile|cell(?: ?phone)?|direct (?:line|dial|number)|ddi|personal|private|home (?:phone|number|tel)"
    r"|whats ?app|wechat)\b)"
    r"|手机|手機|直线|直線|直拨|直撥|私人|个人|個人|本人|家庭电话|家庭住址|住宅电话|微信"
)
# Roles and titles that make a number someone's. Bare "engineer" or "师傅" is not one: "book an engineer on 0800 …",
# "预约师傅上门"; a surname makes it one: "王师傅", "李工程师", "张先生" (not "王工"/"李总": "任何工作日" has 何工).
_SURNAMES = (  # the most common Chinese surnames
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏"
    "魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵"
    "万钱严覃武戴莫孔向汤"
)
_PERSON_ROLE = re.compile(
    r"(?i:\b(?:manager|supervisor|director|coordinator|secretary|contact person|attn)\b)"
    r"|\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\b\.?\s*[A-Z]"
    r"|经理|經理|主管|联系人|聯繫人|负责人|負責人|店长|店長|员工"
    rf"|[{_SURNAMES}](?:师傅|師傅|工程师|工程師|先生|女士|小姐|老师|老師)"
)
# "call Anna Berg on …": two or three capitalised words after a verb of reaching someone, none of them an org word.
_CALL_NAME = re.compile(r"\b(?i:call|contact|ask(?: for)?|ring|reach|speak to|write to)\s+((?:[A-Z][a-z]+\s*){2,3})")
_ORG_WORDS = {
    "service", "services", "support", "hotline", "helpline", "centre", "center", "team", "desk", "office", "sales",
    "department", "customer", "care", "recall", "parts", "head", "reception", "store", "shop", "branch", "central",
    "home", "appliances", "ltd", "limited", "inc", "gmbh", "co", "corp", "company", "group", "the", "our", "us",
}  # fmt: skip
# What names a place in a record's name field or a table's first column: "Service Centre Aldermoor", "网点".
_PLACE = re.compile(
    r"(?i:\b(?:service (?:cent(?:re|er)|point|station|partner)|cent(?:re|er)|office|branch|store|shop|showroom"
    r"|depot|outlet|workshop|hotline|department)s?\b)"
    r"|服务中心|维修中心|服务站|维修站|网点|门店|营业厅|专卖店|分公司|办事处|总部|热线"
)
# Fields that name what a record is about ("name", "centre_name", "网点名称"); not "title", which is a person's job.
_NAME_KEY = re.compile(r"(?i)^(?:[\w ]* )?name$|^(?:type|kind|category)$|名称$|名字$|类型$")
# Fields of a record about a person, which no opening hours or branch column makes a place's: "customer", "姓名".
_PERSON_KEY = re.compile(
    r"(?i)\b(?:customer|client|patient|employee|staff|member|user|first name|last name|surname|given name|birth"
    r"|date of birth|dob)\b|姓名|客户|用户|员工|会员|患者|出生|生日"
)
_HOURS_KEY = re.compile(r"(?i)\b(?:opening|business hours|office hours)\b|营业时间|开放时间")  # not "working hours"
_CONTACT_KEY = re.compile(r"(?i)[\w .-]*(?:phone|tel|telephone|e-?mail|mail|fax|hotline|contact|电话|邮箱|传真|热线)")
# Mailboxes of a function rather than a person: service@, support@, info@, customer.service@, kefu@ (客服).
_ROLE_MAILBOX = {
    "service", "support", "help", "helpdesk", "info", "information", "contact", "contactus", "enquiries", "enquiry",
    "inquiries", "hello", "sales", "orders", "office", "reception", "admin", "team", "customerservice", "customercare",
    "customer", "care", "tech", "technical", "recall", "recalls", "returns", "warranty", "parts", "press", "media",
    "marketing", "hr", "jobs", "careers", "billing", "accounts", "invoices", "noreply", "no-reply", "webmaster",
    "feedback", "complaints", "kefu", "fuwu", "shouhou", "tousu",
}  # fmt: skip
_WEBMAIL = re.compile(
    r"(?i)@(?:gmail|googlemail|hotmail|outlook|live|yahoo|icloud|me|aol|gmx|web|proton|protonmail|qq|foxmail|163|126"
    r"|yeah|sina|sohu|aliyun|139)\.(?:com|cn|net|de|me|co\.uk|com\.cn)$"
)
_PERSON_MAILBOX = re.compile(r"(?i)^[a-z]+[._-][a-z]+\d*$")  # anna.berg, li_wei, j-smith2

_CN_MOBILE = re.compile(CN_MOBILE_NUMBER)
_PERSONAL_TYPES = {
    phonenumbers.PhoneNumberType.MOBILE,
    phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
    phonenumbers.PhoneNumberType.PAGER,
}
_SHARED_TYPES = {
    phonenumbers.PhoneNumberType.TOLL_FREE,
    phonenumbers.PhoneNumberType.SHARED_COST,
    phonenumbers.PhoneNumberType.UAN,
}


def _international_type(value: str) -> int | None:
    """phonenumbers' type of a number written with its country code (+44 …, 0086 …), else None."""
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.lstrip("(").startswith("+"):
        return None
    try:
        return phonenumbers.number_type(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return None


def _mailbox(value: str) -> tuple[str, str]:
    local, _, domain = value.casefold().rpartition("@")
    return local, domain


# --- personal rules: any one of them redacts the contact ------------------------------------------------------------


def mobile_number(c: Contact) -> bool:
    """A mobile number (1[3-9]x in mainland China, 07… in the UK, or +CC of a mobile range) belongs to a person."""
    if c.kind != "phone":
        return False
    value = c.value.strip()
    # UK mobiles as written there, "07700 900123"; not a Chinese landline with a 07xx area code, "0712-1234567".
    uk_mobile = re.fullmatch(r"07\d{3} ?\d{6}", value) is not None
    return _CN_MOBILE.fullmatch(value) is not None or uk_mobile or _international_type(value) in _PERSONAL_TYPES


def personal_label(c: Contact) -> bool:
    """Labelled as someone's own: mobile, direct line, private, home phone, 手机, 直线, 私人, 微信."""
    return _PERSONAL_LABEL.search(c.near) is not None or _PERSONAL_LABEL.search(c.key) is not None


def named_person(c: Contact) -> bool:
    """Next to a person: a title (Mr, Ms, Dr), a role (manager, engineer, 经理, 主管, 联系人), or "call Anna Berg"."""
    if _PERSON_ROLE.search(c.before) or _PERSON_ROLE.search(c.key):  # "预约工程师上门" after a hotline is no person
        return True
    return any(not {w.casefold() for w in m.group(1).split()} & _ORG_WORDS for m in _CALL_NAME.finditer(c.before))


def personal_mailbox(c: Contact) -> bool:
    """A mailbox named after a person (anna.berg@, li_wei@), of digits (a QQ number) or at a webmail provider."""
    if c.kind != "email":
        return False
    local, _ = _mailbox(c.value)
    if _WEBMAIL.search(c.value) or local.isdigit():
        return True
    parts = re.split(r"[._-]", local)
    return _PERSON_MAILBOX.fullmatch(local) is not None and not set(parts) & _ROLE_MAILBOX


PERSONAL: dict[str, Callable[[Contact], bool]] = {
    "mobile_number": mobile_number,
    "personal_label": personal_label,
    "named_person": named_person,
    "personal_mailbox": personal_mailbox,
}

# --- organisational rules: the first that fits keeps the contact ----------------------------------------------------


def toll_free(c: Contact) -> bool:
    """A toll-free or shared-cost number (0800, 0808, 1800, 400, 800): a business pays for it, no person owns one."""
    if c.kind != "phone":
        return False
    kind = _international_type(c.value)
    if kind is not None:
        return kind in _SHARED_TYPES
    digits = re.sub(r"\D", "", c.value)
    return digits.startswith(("0800", "0808", "1800")) or (len(digits) == 10 and digits.startswith(("400", "800")))


def role_mailbox(c: Contact) -> bool:
    """A department's mailbox (service@, support@, info@, recall@, kefu@): it answers whoever holds the job."""
    if c.kind != "email":
        return False
    parts = re.split(r"[._+-]", _mailbox(c.value)[0])
    return all(p in _ROLE_MAILBOX for p in parts)


def org_label(c: Contact) -> bool:
    """Labelled as the organisation's: hotline, customer service, office, reception, fax, 服务热线, 客服, 营业厅."""
    return _ORG_LABEL.search(c.near) is not None or _ORG_LABEL.search(c.key) is not None


def place_record(c: Contact) -> bool:
    """The phone or e-mail field of a place's record (named as a service centre, office or 网点, or with opening hours).

    A directory row or JSON record of a service centre, not of a person: its name field or first column names a
    place, or it has opening hours, which people do not."""
    if not c.record or not _CONTACT_KEY.fullmatch(c.key) or any(_PERSON_KEY.search(k) for k, _ in c.record):
        return False
    if _PLACE.search(c.record[0][0]):  # a table whose first column is "Service centre", "Office", "网点"
        return True
    return any(_HOURS_KEY.search(k) or (_NAME_KEY.match(k.strip()) and _PLACE.search(v)) for k, v in c.record)


ORGANISATIONAL: dict[str, Callable[[Contact], bool]] = {
    "toll_free": toll_free,
    "role_mailbox": role_mailbox,
    "org_label": org_label,
    "place_record": place_record,
}
RULES: dict[str, str] = {
    name: (rule.__doc__ or "").split("\n")[0] for name, rule in {**PERSONAL, **ORGANISATIONAL}.items()
}
"""Each rule's name and why it decides, for the ingest report."""


def keep_rule(c: Contact) -> str | None:
    """The name of the organisational rule that keeps this contact, or None to redact it (personal, or unsure)."""
    if any(rule(c) for rule in PERSONAL.values()):
        return None
    return next((name for name, rule in ORGANISATIONAL.items() if rule(c)), None)


# --- context --------------------------------------------------------------------------------------------------------


def _spaced(text: str) -> str:
    """Field names as words: "national_hotline.phone" → "national hotline phone"."""
    return re.sub(r"(?<=\w)[_.](?=\w)", " ", text)


def _around(text: str, start: int, end: int, lo: int, hi: int) -> tuple[str, str]:
    """The sentence or cell before and after text[start:end], no further back than lo and no further on than hi."""
    before = text[max(lo, start - _BEFORE) : start]
    cut = max((m.end() for m in _BOUNDARY.finditer(before)), default=0)
    after = text[end : min(hi, end + _AFTER)]
    stop = _BOUNDARY.search(after)
    return _spaced(before[cut:]), _spaced(after[: stop.start() if stop else len(after)])


def _line_at(text: str, pos: int) -> tuple[int, int] | None:
    """Start and end of the line holding pos; None when it is longer than a record can be."""
    lo, hi = max(0, pos - _RECORD_CHARS), min(len(text), pos + _RECORD_CHARS)
    start, end = text.rfind("\n", lo, pos), text.find("\n", pos, hi)
    if (start < 0 < lo) or (end < 0 and hi < len(text)):
        return None
    return start + 1, end if end >= 0 else len(text)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@lru_cache(maxsize=4)  # one text's contacts are judged one after the other
def _table_starts(text: str) -> list[int]:
    """Where each table of a text begins: the first of each run of consecutive lines holding " | "."""
    starts, pos, in_table = [], 0, False
    for line in text.split("\n"):
        if " | " in line and not in_table:
            starts.append(pos)
        in_table = " | " in line
        pos += len(line) + 1
    return starts


def _table_record(text: str, start: int, line_start: int, line_end: int) -> tuple[str, list[tuple[str, str]]] | None:
    """(column header, other (header, cell) pairs) for a contact in a table row rendered as "a | b | c"."""
    starts = _table_starts(text)
    header_start = starts[bisect.bisect_right(starts, line_start) - 1]
    if header_start == line_start:
        return None  # the contact is in the header row, or the table has no header
    header = _cells(text[header_start : text.find("\n", header_start)])
    row = _cells(text[line_start:line_end])
    column = text[line_start:start].count("|") - text[line_start:line_end].lstrip().startswith("|")
    if len(header) != len(row) or not 0 <= column < len(row):
        return None
    pairs = list(zip(header, row, strict=True))
    return header[column], pairs[:column] + pairs[column + 1 :]


def _record(text: str, start: int) -> tuple[str, list[tuple[str, str]]] | None:
    """(field name, other fields) when the contact at `start` is a value in a record, else None.

    A record is a table row under its header, a line of "key: value; key: value" (CSV rows as loaded), or a
    paragraph of at least two "key: value" lines (JSON records as loaded); a first line without a colon is its name.
    """
    bounds = _line_at(text, start)
    if bounds is None:
        return None
    line_start, line_end = bounds
    line = text[line_start:line_end]
    if " | " in line:
        return _table_record(text, start, line_start, line_end)
    if not _FIELD.match(line):
        return None  # running text: only a line of "key: value" fields is a record's
    fields: list[tuple[int, int, str, str]] = []  # (start, end, key, value) of each field
    starts = [line_start] + [line_start + m.end() for m in _NEXT_FIELD.finditer(line)]
    if len(starts) > 1 and _FIELD.match(line):  # one line, "key: value; key: value"
        for lo, hi in zip(starts, [s - 2 for s in starts[1:]] + [line_end], strict=True):
            m = _FIELD.match(text[lo:hi])
            fields.append((lo, hi, m.group(1), m.group(2)))
    else:  # a paragraph of "key: value" lines
        lo, hi = max(0, start - _RECORD_CHARS), min(len(text), start + _RECORD_CHARS)
        para_start = text.rfind("\n\n", lo, start) + 2 if "\n\n" in text[lo:start] else lo
        para_end = text.find("\n\n", start, hi) if "\n\n" in text[start:hi] else hi
        if (para_start == lo > 0) or (para_end == hi < len(text)):
            return None  # a paragraph this long is running text, not a record
        offset = para_start
        for i, ln in enumerate(text[para_start:para_end].split("\n")):
            m = _FIELD.match(ln)
            if m:
                fields.append((offset, offset + len(ln), m.group(1), m.group(2)))
            elif i == 0 and ln.strip():  # a heading line: the record's name
                fields.append((offset, offset + len(ln), "name", ln.strip()))
            offset += len(ln) + 1
        if sum(_FIELD.match(text[lo:hi]) is not None for lo, hi, _, _ in fields) < 2:
            return None
    own = next((f for f in fields if f[0] <= start < f[1]), None)
    if own is None or _FIELD.match(text[own[0] : start]) is None:
        return None  # the contact is in a heading, or in a field's name
    return _spaced(own[2]), [(_spaced(k), v) for lo, _, k, v in fields if lo != own[0]]


def contact_at(text: str, start: int, end: int, kind: str, lo: int = 0, hi: int | None = None) -> Contact:
    """The contact text[start:end] with what is beside it; lo and hi are the ends of the contacts before and after."""
    record = _record(text, start)
    key, others = record if record else ("", [])
    before, after = _around(text, start, end, lo, len(text) if hi is None else hi)
    return Contact(kind, text[start:end], before, after, key, others)
