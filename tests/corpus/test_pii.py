"""PII redaction: every kind is found in English and Chinese text, and ordinary numbers are left alone; the
organisation's published contacts are kept (each by a named rule) and personal ones redacted."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hangjia.cli import app
from hangjia.core.config import ProjectConfig
from hangjia.core.workspace import Workspace
from hangjia.corpus.clean import CleanOptions, clean_documents
from hangjia.corpus.contacts import ORGANISATIONAL, PERSONAL, RULES, contact_at
from hangjia.corpus.documents import load_documents
from hangjia.corpus.pii import ALLOW_LIST, KEEP_RULES, PLACEHOLDERS, find, redact, redact_keeping
from hangjia.stages.ingest import ingest
from tests.paths import KESTREL_DOCS, LANSHAN


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


# --- published contacts: kept by a rule, or redacted --------------------------------------------------------------


def kept_rules(text: str) -> dict[str, str]:
    """Each kept contact's value and the rule that kept it, with keep_org on."""
    return {k.value: k.rule for k in redact_keeping(text, keep_org=True)[2]}


@pytest.mark.parametrize(
    ("text", "contact", "rule"),
    [
        ("Brochures: call 0800 318 4400 any time.", "0800 318 4400", "toll_free"),
        ("Call 1-800-555-0199 in the US.", "1-800-555-0199", "toll_free"),
        ("Phone +44 800 318 4400 from abroad.", "+44 800 318 4400", "toll_free"),
        ("如需帮助，请拨打 400-826-7315 预约。", "400-826-7315", "toll_free"),
        ("mail support@acme.example for help", "support@acme.example", "role_mailbox"),
        ("Write to customer.service@acme.example.", "customer.service@acme.example", "role_mailbox"),
        ("邮箱：kefu@lanshan-home.example", "kefu@lanshan-home.example", "role_mailbox"),
        ("Shenzhen office 0755-1234567.", "0755-1234567", "org_label"),
        ("Reception, phone 020 7946 0000 (weekdays).", "020 7946 0000", "org_label"),
        ("Write to the parts department at kp-orders@acme.example.", "kp-orders@acme.example", "org_label"),
        ("营业厅电话：0571-86917305", "0571-86917305", "org_label"),
        ("客服邮箱：kf2024@lanshan-home.example", "kf2024@lanshan-home.example", "org_label"),
        ("national_hotline.phone: 0471 552 010", "0471 552 010", "org_label"),
        (
            "id: KSC-01\nname: Kestrel Service Centre Aldermoor\nphone: 0471 552 010\nmanager: Ines Valbrook",
            "0471 552 010",
            "place_record",
        ),
        (
            "id: KSC-01\nname: Kestrel Service Centre Aldermoor\nemail: aldermoor@kestrel-home.example\nstatus: open",
            "aldermoor@kestrel-home.example",
            "place_record",
        ),
        (
            "name: Harbour Road\naddress: Harbour Road 220\nphone: 0583 210 447\nopening_hours.sat: closed",
            "0583 210 447",
            "place_record",
        ),
        (
            "name: 蓝杉服务中心（杭州滨江）\naddress: 杭州市滨江区青杉路 88 号\nphone: 0571-86917305\nmanager: 沈佳怡",
            "0571-86917305",
            "place_record",
        ),
        ("名称: 拱墅网点; 电话: 0571-88352640; 营业时间: 09:00-17:30", "0571-88352640", "place_record"),
        ("Office | City | Tel\nShenzhen | Shenzhen | 0755-1234567", "0755-1234567", "place_record"),
        ("网点 | 电话\n杭州拱墅 | 0571-88352640", "0571-88352640", "place_record"),
        # A role after the number is not its owner: the engineer is booked through the hotline.
        ("Book an engineer visit: call 0800 318 4400.", "0800 318 4400", "toll_free"),
        ("请拨打服务热线 400-826-7315 预约工程师上门。", "400-826-7315", "toll_free"),
        ("任何工作日均可拨打客服电话 0571-86917305。", "0571-86917305", "org_label"),
    ],
)
def test_organisation_contacts_are_kept_with_their_rule(text, contact, rule):
    assert kept_rules(text) == {contact: rule}
    assert contact in redact(text, keep_org=True)[0]
    assert contact not in redact(text)[0]  # keep_org is off unless asked for: every contact redacted


@pytest.mark.parametrize(
    ("text", "contact", "rule"),
    [
        ("Service hotline: 13812345678", "13812345678", "mobile_number"),
        ("服务热线：+86 139 5817 2046", "+86 139 5817 2046", "mobile_number"),
        ("Hotline 07700 900123 (weekends)", "07700 900123", "mobile_number"),
        ("Customer care: +44 7911 123456", "+44 7911 123456", "mobile_number"),
        ("Service centre direct line: 0755-1234567", "0755-1234567", "personal_label"),
        ("Head office, mobile 020 7946 0958", "020 7946 0958", "personal_label"),
        ("门店直线：0571-86917305", "0571-86917305", "personal_label"),
        ("Service centre tel 0755-1234567 (direct line)", "0755-1234567", "personal_label"),
        ("客服微信号电话 0571-86917305", "0571-86917305", "personal_label"),
        ("For the Aldermoor office, call Ms Berg on 0471 552 010.", "0471 552 010", "named_person"),
        ("Service desk: call Anna Berg on 020 7946 0958.", "020 7946 0958", "named_person"),
        ("Office manager: 0755-1234567", "0755-1234567", "named_person"),
        ("售后服务中心张经理，电话 0571-88352640", "0571-88352640", "named_person"),
        ("营业厅联系人：0571-88352640", "0571-88352640", "named_person"),
        ("维修中心王师傅 0571-88352640", "0571-88352640", "named_person"),
        ("Customer service: anna.berg@kestrel-home.example", "anna.berg@kestrel-home.example", "personal_mailbox"),
        ("support desk: kestrel.help@gmail.com", "kestrel.help@gmail.com", "personal_mailbox"),
        ("客服邮箱：12345678@qq.com", "12345678@qq.com", "personal_mailbox"),
    ],
)
def test_personal_contacts_are_redacted_even_beside_an_organisation_label(text, contact, rule):
    [(start, end, kind)] = find(text)
    assert text[start:end] == contact
    assert PERSONAL[rule](contact_at(text, start, end, kind))
    out, counts, kept = redact_keeping(text, keep_org=True)
    assert contact not in out and kept == [] and counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "Call 0471 552 010 for an appointment.",  # no label: unsure, so redacted
        "电话：0571-86917305",
        "Mail aldermoor@kestrel-home.example.",
        # Records of people, not places: a customer list and a staff table.
        "name: Anna Berg\naddress: Elm Street 4\nphone: 0471 552 010",
        "customer: Anna Berg; branch: Aldermoor Service Centre; phone: 0471 552 010; opening_hours: 08-18",
        "Name | Role | Tel\nAnna Berg | Engineer | 0755-1234567",
        "姓名: 王芳; 门店: 杭州拱墅; 电话: 0571-88352640; 营业时间: 09:00-17:30",
    ],
)
def test_unlabelled_or_personal_records_are_redacted(text):
    out, counts, kept = redact_keeping(text, keep_org=True)
    assert kept == [] and sum(counts.values()) == len(find(text)) >= 1


def test_a_label_belongs_to_the_contact_after_it_not_to_the_next():
    text = "Hotline: 0845 600 4400, or phone 0471 552 010."
    assert kept_rules(text) == {"0845 600 4400": "org_label"}
    assert redact(text, keep_org=True)[0] == "Hotline: 0845 600 4400, or phone [PHONE]."
    # Two contacts in one record line are judged each by its own field.
    record = (
        "name: 苏州吴中服务中心\nphone: 0512-66281530\nnotes: 春节值班联系人：吴建国（网点主管），手机 139 5817 2046。"
    )
    out, counts, kept = redact_keeping(record, keep_org=True)
    assert [(k.value, k.rule) for k in kept] == [("0512-66281530", "place_record")]
    assert "手机 [PHONE]" in out and counts == {"phone": 1}


def test_ids_cards_and_ips_are_never_kept_as_contacts():
    text = f"服务热线身份证号{VALID_ID}，客服卡号{VALID_CARD}，hotline server 10.0.0.254"
    out, counts, kept = redact_keeping(text, keep_org=True)
    assert kept == [] and counts == {"cn_id": 1, "bank_card": 1, "ip": 1}


def test_allow_list_keeps_what_it_lists_whatever_the_rules_say():
    text = "Call Anna on 0471 552 010 or the hotline on 13812345678; mail anna.berg@acme.example."
    out, counts, kept = redact_keeping(text, allow=["0471552010", "13812345678"], keep_org=True)
    assert [(k.value, k.rule) for k in kept] == [("0471 552 010", ALLOW_LIST), ("13812345678", ALLOW_LIST)]
    assert counts == {"email": 1} and "[EMAIL]" in out
    assert redact(text, allow=["0471552010", "13812345678"])[0] == out  # the same with keep_org off


def test_every_rule_has_a_reason_for_the_report():
    assert set(RULES) == set(PERSONAL) | set(ORGANISATIONAL)
    assert set(KEEP_RULES) == set(ORGANISATIONAL) | {ALLOW_LIST}
    assert all(len(why) > 20 and "\n" not in why for why in KEEP_RULES.values())


# --- the sample domains --------------------------------------------------------------------------------------------


def test_kestrel_keeps_its_published_contacts_without_an_allow_list():
    docs = load_documents(KESTREL_DOCS)[0]
    kept, _, report = clean_documents(docs)
    centres = json.loads((KESTREL_DOCS / "service_centres.json").read_text(encoding="utf-8"))
    published = {centres["national_hotline"]["phone"], centres["national_hotline"]["email"]}
    published |= {centres["recall_hotline"]["phone"], "recall@kestrel-home.example"}  # recall_notices.html
    published |= {c[field] for c in centres["service_centres"] for field in ("phone", "email")}
    assert {row["value"] for row in report.pii_kept} == published
    assert sum(report.pii.values()) == 0  # the sample has no personal contact
    text = "\n".join(d.text for d in kept)
    assert all(value in text for value in published) and "[PHONE]" not in text and "[EMAIL]" not in text
    everything = clean_documents(docs, CleanOptions(keep_org_contacts=False))[2]  # the setting off: all redacted
    assert everything.pii_kept == [] and sum(everything.pii.values()) == sum(r["count"] for r in report.pii_kept)


def test_lanshan_keeps_its_hotlines_and_outlets_and_redacts_the_supervisors_mobile():
    docs = load_documents(LANSHAN / "docs")[0]
    kept, _, report = clean_documents(docs)
    outlets = json.loads((LANSHAN / "docs" / "service_outlets.json").read_text(encoding="utf-8"))
    published = {outlets["national_hotline"]["phone"], outlets["national_hotline"]["email"]}
    published |= {outlets["recall_hotline"]["phone"]} | {o["phone"] for o in outlets["service_outlets"]}
    mobiles = [
        m for o in outlets["service_outlets"] for m in re.findall(r"手机\s*([\d ]{11,13}\d)", o.get("notes", ""))
    ]
    assert {row["value"] for row in report.pii_kept} == published
    assert mobiles and report.pii == {"phone": len(mobiles)}
    text = "\n".join(d.text for d in kept)
    assert all(value in text for value in published) and not any(m in text for m in mobiles)
    assert "手机 [PHONE]" in text


# --- the ingest stage and its report -------------------------------------------------------------------------------

DOCS = {
    "contact.md": "# Contact\n\nCall the service hotline on 0800 318 4400 (free), or mail service@acme.example.\n\n"
    "Questions about your order? Call Anna Berg on 138 0013 8000.\n",
    "centres.json": json.dumps(
        {"centres": [{"name": "ACME Service Centre Aldermoor", "phone": "0471 552 010", "opening_hours": "08-18"}]}
    ),
}


@pytest.fixture
def docs_dir(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_ingest_report_lists_what_was_kept_and_why(docs_dir, tmp_path):
    ws = Workspace(tmp_path / "ws")
    result = ingest(ws, ProjectConfig(docs=docs_dir), Console(quiet=True))
    report = json.loads((ws.stage_dir("ingest") / "report.json").read_text(encoding="utf-8"))
    assert report == result["report"]
    kept = {row["value"]: (row["rule"], row["count"], row["sources"]) for row in report["pii_kept"]}
    assert kept == {
        "0800 318 4400": ("toll_free", 1, ["contact.md"]),
        "service@acme.example": ("role_mailbox", 1, ["contact.md"]),
        "0471 552 010": ("place_record", 1, ["centres.json"]),
    }
    assert report["pii_keep_rules"] == {
        rule: KEEP_RULES[rule] for rule in ("toll_free", "role_mailbox", "place_record")
    }
    assert report["pii"] == {"phone": 1}  # Anna Berg's mobile
    assert result["counts"]["pii_kept"] == 3 and result["counts"]["pii_redacted"] == 1

    cfg = ProjectConfig(docs=docs_dir)
    cfg.ingest.keep_org_contacts = False  # off: every contact redacted, as before the setting existed
    off = ingest(ws, cfg, Console(quiet=True))
    assert off["report"]["pii_kept"] == [] and off["report"]["pii"] == {"phone": 3, "email": 1}


def test_hangjia_ingest_prints_the_kept_contacts_by_rule(docs_dir, tmp_path):
    result = CliRunner().invoke(
        app, ["ingest", "-w", str(tmp_path / "ws"), "--docs", str(docs_dir)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "redacted PII: 1 phone" in result.output
    assert "kept 3 published contacts" in result.output
    for rule, value in [("toll_free", "0800 318 4400"), ("place_record", "0471 552 010")]:
        line = next(ln for ln in result.output.splitlines() if ln.strip().startswith(rule))
        assert value in line and KEEP_RULES[rule] in line
