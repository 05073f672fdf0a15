"""Cleaning: unicode and whitespace repair, running headers/footers and boilerplate dropped, spans kept right,
language detection, quality filters, and the sample domain's documents."""

from __future__ import annotations

import dataclasses

import pytest

from hangjia.corpus.clean import (
    CleanOptions,
    CleanReport,
    clean_documents,
    clean_text,
    detect_language,
    is_boilerplate,
    quality_issues,
    repeated_lines,
)
from hangjia.corpus.documents import Document, load_documents
from hangjia.corpus.text import assemble
from tests.paths import KESTREL_DOCS

EN = (
    "Clean the filter every two weeks. Remove the lower basket, turn the micro filter anticlockwise and lift it out. "
    "Rinse the coarse and the flat mesh filter under running water and refit them before the next programme."
)
ZH = (
    "每两周清洗一次过滤器。取出下层碗篮，逆时针转动微过滤器并将其取出。"
    "在流水下冲洗粗过滤器和平网过滤器，然后在下次运行程序前重新装好。"
)


def doc_of(source: str, blocks: list[tuple[str, str]], fmt: str = "txt") -> Document:
    text, sections = assemble(blocks)
    return Document(source, fmt, text, sections, "ab" * 32)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The cafÃ© opens at 8", "The café opens at 8"),  # mojibake repaired
        ("zero\u200bwidth\u200d joiner\ufeff", "zerowidth joiner"),
        # Runs of spaces are kept (column tables need them); tabs become spaces; trailing space goes.
        ("tabs\tand   spaces  \nnext line ", "tabs    and   spaces\nnext line"),
        ("Minimum flow      14 L/min   20 L/min", "Minimum flow      14 L/min   20 L/min"),
        ("para one\n\n\n\n\npara two", "para one\n\npara two"),
        ("Ｐｒｉｃｅ １２０ EUR, ﬁlter", "Price 120 EUR, filter"),  # fullwidth letters and a ligature become ASCII
        ("型号（HP-08M）：请拨打１３８１２３４５６７８，谢谢！", "型号（HP-08M）：请拨打13812345678，谢谢！"),
        ("等一下……好", "等一下……好"),  # Chinese ellipsis stays, digits and letters go half-width
        ("Area 2.5 mm² at 10⁻³ bar", "Area 2.5 mm² at 10⁻³ bar"),  # NFKC would make these mm2 and 10-3
        ("no\u00a0break\u2009thin\u3000wide", "no break thin wide"),
        ("page one\fpage two", "page one\npage two"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    "line",
    [
        "© 2024 Kestrel Home Appliances Ltd.",
        "Legal notice: (c) 2023 Kestrel Home Appliances Ltd., Foundry Lane 14",
        "Copyright 2021 ACME GmbH",
        "All rights reserved.",
        "版权所有 © 2024 某某电器有限公司",
        "This website uses cookies to improve your experience. Accept all cookies",
        "本网站使用Cookie以改善您的体验。",
        "Printed in Germany 03/2024",
        "Page 3 of 9",
        "KESTREL HOME APPLIANCES | DW-4500 Quietline | Installation Manual | Page 1 of 1",
        "第 3 页 共 9 页",
        "- 12 -",
    ],
)
def test_boilerplate_lines(line):
    assert is_boilerplate(line)


@pytest.mark.parametrize(
    "line",
    [
        "The warranty covers all parts and labour for 24 months.",
        "See the wiring diagram on page 12.",
        "Copyright law does not cover the product names.",
        "Customers have the right to a repair or a replacement.",
        "请在第一次使用前阅读本说明书。",
    ],
)
def test_content_lines_are_not_boilerplate(line):
    assert not is_boilerplate(line)


HEADER, FOOTER = "ACME PUMPS | SERVICE MANUAL", "Confidential: for authorised service partners only"


def paged(pages: list[str]) -> list[str]:
    """Each page between the running header and the footer lines, as a printed manual's text comes out."""
    return [f"{HEADER}\n{page}\n{FOOTER}\nPage {n} of {len(pages)}" for n, page in enumerate(pages, 1)]


def test_repeated_lines_across_documents_and_pages():
    manuals = [
        Document(
            f"{name}.txt", "txt", "\f".join(paged([f"{name} guide.\nStep {i}.\nDone.", "Care.\nStep 2."])), [], "0"
        )
        for i, name in enumerate(["Pump", "Filter", "Valve"])
    ]
    notes = Document("notes.txt", "txt", "Step 1.\nUnrelated notes.", [], "0")
    keys = repeated_lines([*manuals, notes])
    assert {HEADER.casefold(), FOOTER.casefold(), "page # of #"} <= keys  # in 3 of 4 documents; digits masked
    assert "care." in keys  # first line of page 2 in all three manuals: looks like a header, and is dropped as one
    assert "step #." not in keys and "done." not in keys  # inside pages, not at their edges
    assert not any("guide" in k for k in keys)  # at the edge, but different in each manual
    assert repeated_lines([manuals[0]], min_docs=2) == {HEADER.casefold(), FOOTER.casefold(), "page # of #"}
    assert repeated_lines([manuals[0]]) == set()  # 2 pages: fewer than min_docs
    assert repeated_lines(manuals[:2]) == set()  # 2 documents: fewer than min_docs
    rows = [Document(f"r{i}.json", "json", "status: open\n\nstatus: open", [], "0") for i in range(4)]
    assert repeated_lines(rows) == set()  # table rows repeat values, not headers


MANUALS = {
    "pump.txt": [
        ("Installing the pump", "Installing the pump\nPut the pump on a flat floor.\nLeave  5 cm\ton each side."),
        ("Contact", "Contact\nQuestions? Call 13812345678 or mail pumps@acme.example."),
    ],
    "filter.txt": [
        ("Fitting the filter", "Fitting the filter\nTurn the filter clockwise until it clicks."),
        ("Cleaning", "Cleaning\nRinse the mesh under running water every month."),
    ],
    "valve.txt": [
        ("Replacing the valve", "Replacing the valve\nClose the water supply before you start."),
        ("Legal", "\u00a9 2024 ACME Pumps Ltd. All rights reserved."),
    ],
}


def test_clean_documents_drops_headers_and_keeps_spans_right():
    docs = []
    for source, sections in MANUALS.items():
        pages = paged([body for _, body in sections])
        docs.append(doc_of(source, [(title, page) for (title, _), page in zip(sections, pages, strict=True)]))
    kept, filtered, report = clean_documents(docs, CleanOptions(min_chars=10))
    assert filtered == [] and [d.source for d in kept] == list(MANUALS)
    expected = {
        "pump.txt": {
            "Installing the pump": "Installing the pump\nPut the pump on a flat floor.\nLeave  5 cm    on each side.",
            "Contact": "Contact\nQuestions? Call [PHONE] or mail [EMAIL].",
        },
        "filter.txt": {title: body for title, body in MANUALS["filter.txt"]},
        "valve.txt": {"Replacing the valve": MANUALS["valve.txt"][0][1]},  # the legal page had only boilerplate
    }
    for doc in kept:
        assert {s.title: doc.text[s.start : s.end] for s in doc.sections} == expected[doc.source]
        assert doc.text == "\n\n".join(expected[doc.source].values())
        assert (doc.format, doc.sha256) == ("txt", "ab" * 32)
    assert [f.name for f in dataclasses.fields(Document)] == ["source", "format", "text", "sections", "sha256"]
    assert report.header_footer_lines == 6 * 3  # header, footer and page number on each of the 6 pages
    assert report.boilerplate_lines == 1
    assert report.pii == {"phone": 1, "email": 1}
    assert report.documents_changed == 3


def test_unique_lines_stay_when_nothing_repeats():
    texts = [EN, ZH, "Close the water supply before you replace the inlet valve.", "Rinse the mesh every month."]
    docs = [doc_of(f"d{i}.txt", [("", text)]) for i, text in enumerate(texts)]
    kept, _, report = clean_documents(docs, CleanOptions(min_chars=10))
    assert report.header_footer_lines == 0 and report.documents_changed == 0
    assert [d.text for d in kept] == texts


def test_detect_language():
    assert detect_language(EN) == "en"
    assert detect_language(ZH) == "zh"
    assert detect_language("Die Spülmaschine muss auf einem ebenen Boden stehen und darf nicht gekippt werden.") == "de"
    assert detect_language("12 34 -- 56") == "und"


def test_languages_are_reported_by_source():
    docs = [doc_of("en.txt", [("", EN)]), doc_of("zh.txt", [("", ZH)])]
    kept, _, report = clean_documents(docs)
    assert len(kept) == 2
    assert report.languages == {"en.txt": "en", "zh.txt": "zh"}


def test_quality_filters():
    assert quality_issues(EN, 50, 0.3, 0.5) == []
    assert quality_issues(ZH, 50, 0.3, 0.5) == []
    assert quality_issues("Too short.", 50, 0.3, 0.5) == ["too short"]
    assert quality_issues("#### ==== |||| ---- ~~~~ >>>> <<<< **** Intro", 10, 0.3, 0.5) == ["too many symbols"]
    same_line = "\n".join(["Buy the AP-200 pump today at the lowest price!"] * 4 + ["Offer valid in May."])
    assert quality_issues(same_line, 50, 0.3, 0.5) == ["repetitive"]
    looping = "the pump is on and " * 20
    assert quality_issues(looping, 50, 0.3, 0.5) == ["repetitive"]
    # Table rows repeat their field names; within each row nothing repeats, so a price list is not "repetitive".
    rows = "\n\n".join(f"part_number: KP-{i}; price_eur: {i}.50; availability: in stock" for i in range(100, 160))
    assert quality_issues(rows, 50, 0.3, 0.5) == []


def test_filtered_documents_come_with_a_reason():
    docs = [
        doc_of("good.txt", [("", EN)]),
        doc_of("stub.txt", [("", "See above.")]),
        doc_of("x.txt", [("", "© 2024 ACME")]),
    ]
    kept, filtered, report = clean_documents(docs)
    assert [d.source for d in kept] == ["good.txt"]
    assert filtered == [("stub.txt", "too short"), ("x.txt", "no text left")]
    assert report.filtered == filtered
    assert isinstance(report, CleanReport) and report.to_dict()["filtered"] == [list(f) for f in filtered]


def test_redaction_can_be_turned_off():
    docs = [doc_of("c.txt", [("", f"{EN} Call 13812345678.")])]
    kept, _, report = clean_documents(docs, CleanOptions(redact_pii=False))
    assert "13812345678" in kept[0].text and report.pii == {}
    kept, _, report = clean_documents(docs, CleanOptions(placeholders={"phone": "<tel>"}))
    assert kept[0].text.endswith("Call <tel>.") and report.pii == {"phone": 1}


@pytest.fixture(scope="module")
def kestrel():
    docs = load_documents(KESTREL_DOCS)[0]
    # Every contact redacted, so that all of them are seen; which ones keep_org_contacts keeps is test_pii's.
    return docs, *clean_documents(docs, CleanOptions(keep_org_contacts=False))


def test_kestrel_docs_are_all_kept_with_pii_redacted(kestrel):
    docs, kept, filtered, report = kestrel
    assert filtered == [] and len(kept) == len(docs) == 12
    by_source = {d.source: d for d in kept}
    centres = by_source["service_centres.json"].text
    for contact in (
        "0800 318 4400",
        "0800 318 4499",
        "0471 552 010",
        "0290 515 262",
        "service@kestrel-home.example",
        "aldermoor@kestrel-home.example",
        "felsberg@kestrel-home.example",
    ):
        assert contact not in centres
    assert "national_hotline.phone: [PHONE]" in centres
    assert "national_hotline.email: [EMAIL]" in centres
    assert centres.count("phone: [PHONE]") == 8 and centres.count("email: [EMAIL]") == 7
    recall = by_source["recall_notices.html"].text
    assert "call our free recall hotline on [PHONE]" in recall and "write to [EMAIL]" in recall
    assert "call the Kestrel hotline on [PHONE]." in by_source["dishwasher_user_guide.txt"].text
    assert report.pii["email"] >= 8 and report.pii["phone"] >= 16
    assert set(report.languages.values()) == {"en"}


def test_kestrel_numbers_and_spans_survive(kestrel):
    docs, kept, _, report = kestrel
    by_source = {d.source: d for d in kept}
    for source, kept_text in [
        ("spare_parts_prices.csv", "part_number: KP-2210; description: Drain pump assembly"),
        ("spare_parts_prices.csv", "price_eur: 38.50"),
        ("recall_notices.html", "12-2403-00001"),
        ("product_overview.md", "62-2312-01874"),
        ("service_centres.json", "last_updated: 2025-01-15"),
        ("service_centres.json", "opening_hours.mon_fri: 08:00-18:00"),
        ("heat_pump_installation_guide.txt", "HP-08M"),
    ]:
        assert kept_text in by_source[source].text
    overview = by_source["product_overview.md"].text
    assert "All rights reserved" not in overview and "©" not in overview
    assert report.boilerplate_lines >= 5
    for old, new in zip(docs, kept, strict=True):
        assert (new.source, new.sha256) == (old.source, old.sha256)
        for s in new.sections:
            body = new.text[s.start : s.end]
            assert body and body == body.strip("\n")
        assert "\n\n".join(new.text[s.start : s.end] for s in new.sections) == new.text
