"""The extractive generator: each pattern on tiny inputs, grounding, dedup, and its pairs on Kestrel."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from hangjia.core.words import is_chinese
from hangjia.corpus.chunk import chunk_documents
from hangjia.corpus.documents import LOADERS, Document, load_documents
from hangjia.instruct.synth import GENERATORS, QAPair, extract_pairs, is_grounded
from tests.paths import KESTREL_DOCS, LANSHAN


def make_doc(source: str, text: str) -> Document:
    body, sections = LOADERS[Path(source).suffix](text.encode(), source)
    return Document(source, Path(source).suffix.lstrip("."), body, sections, "0" * 64)


def pairs_for(source: str, text: str, **kwargs) -> list[QAPair]:
    doc = make_doc(source, text)
    return extract_pairs([doc], chunk_documents([doc]), **kwargs)


def qa(pairs: list[QAPair], kind: str | None = None) -> dict[str, str]:
    return {p.question: p.answer for p in pairs if kind is None or p.kind == kind}


@pytest.fixture(scope="module")
def kestrel():
    docs = load_documents(KESTREL_DOCS)[0]
    chunks = chunk_documents(docs)
    return docs, chunks, extract_pairs(docs, chunks)


def test_generators_are_registered():
    assert list(GENERATORS) == ["faq", "table", "record", "definition", "numeric", "heading"]


def test_faq_question_line_answered_by_the_next_sentences():
    text = (
        "# Help\n\n## Cleaning\n\n**How often should I clean the filter?**\n"
        "Every two weeks. Rinse it under the tap.\n\nQ: Can I use salt? A: Only dishwasher salt.\n"
    )
    got = qa(pairs_for("faq.md", text), "faq")
    assert got["How often should I clean the filter?"] == "Every two weeks. Rinse it under the tap."
    assert got["Can I use salt?"] == "Only dishwasher salt."


def test_markdown_table_gives_forward_and_reverse_questions():
    text = "# Codes\n\n| Code | Meaning | Fix |\n|---|---|---|\n| E24 | Drain pump blocked | Clean pump |\n"
    got = qa(pairs_for("codes.md", text), "table")
    assert got["What is the meaning of E24?"] == "Drain pump blocked"
    assert got['Which code means "Drain pump blocked"?'] == "E24"
    assert got["What is the fix of E24?"] == "Clean pump"


def test_transposed_and_column_aligned_tables():
    md = "# Specs\n\n| | A-1 | B-2 |\n|---|---|---|\n| Width | 45 cm | 60 cm |\n"
    assert qa(pairs_for("specs.md", md), "table")["What is the width of B-2?"] == "60 cm"
    txt = (
        "PRESSURE\n\n  Fill pressure          1.5 bar\n  Safety valve opens     3 bar\n\n"
        "FLOW\n\n                    HP-8     HP-12\n  Minimum flow      14 L/min   20 L/min\n"
        "  Weight            98 kg      131 kg\n"
    )
    got = qa(pairs_for("guide.txt", txt), "table")
    assert got["Pressure: what is the fill pressure?"] == "1.5 bar"
    assert got["What is the weight of HP-12?"] == "131 kg"


def test_csv_records_and_reverse_part_number_lookup():
    csv = (
        "part_number,description,compatible_models,price_eur\nKP-1,Drain pump,DW-1,38.50\n"
        "KP-2,Door seal,DW-1,22.50\nKP-3,Door seal,DW-2,24.50\n"
    )
    got = qa(pairs_for("parts.csv", csv), "record")
    assert got["What is the price (EUR) of KP-1?"] == "38.50 EUR"
    assert got["What is the description of KP-2?"] == "Door seal"
    assert got["Which part number is the drain pump?"] == "KP-1"
    assert got["Which part number is the door seal with compatible models DW-2?"] == "KP-3"


def test_json_records_are_labelled_by_name():
    json_text = '{"centres": [{"name": "North Centre", "manager": "Ann Lee", "hours": {"sat": "closed"}}]}'
    got = qa(pairs_for("centres.json", json_text), "record")
    assert got["What is the manager of North Centre?"] == "Ann Lee"
    assert got["What is the hours sat of North Centre?"] == "closed"


def test_definitions_from_codes_terms_and_means():
    txt = (
        "FAULTS\n\nE24 – Drain pump blocked\n\nFuse: 10 A.\n\nCL on the display means that the child lock "
        "is on.\n\nP01  LOW WATER FLOW\n     The flow is below the minimum.\n"
    )
    got = qa(pairs_for("faults.txt", txt), "definition")
    assert got["What does E24 mean?"] == "Drain pump blocked"
    assert got["What does P01 mean?"] == "Low water flow"  # an ALL-CAPS heading line over its description
    assert got["Faults: what is the fuse?"] == "10 A."
    assert got["What does CL on the display mean?"] == "the child lock is on"


def test_numeric_blanks_the_value_with_its_unit():
    got = qa(
        pairs_for(
            "manual.md",
            "# Manual\n\n## Drain\n\nThe drain hose must not be higher than 900 mm "
            "above the floor. It costs 1,140.00 EUR.\n",
        ),
        "numeric",
    )
    question = next(q for q, a in got.items() if a == "900 mm")
    assert question.startswith('According to Manual, section "Drain", what is the missing value in:')
    assert '"The drain hose must not be higher than ___ above the floor."' in question
    assert "1,140.00 EUR" in got.values()


def test_heading_question_answered_by_first_sentence():
    text = "# Guide\n\n## Rinse aid\n\nRinse aid improves drying of the dishes. The dispenser holds 110 ml.\n"
    got = qa(pairs_for("guide.md", text), "heading")
    question = 'What does the section "Rinse aid" of Guide cover?'
    assert got[question] == "Rinse aid improves drying of the dishes."


def test_is_grounded():
    passage = "The drain pump KP-2210 costs 38.50 EUR. The hose may be at most 900 mm high."
    assert is_grounded("38.50 EUR", passage)
    assert is_grounded("Drain pump", passage.upper())
    assert not is_grounded("39.50 EUR", passage)  # a number the passage does not contain
    assert not is_grounded("900 mm and 1,000 mm", passage)
    assert not is_grounded("The heating element is defective", passage)
    assert not is_grounded("", passage)


def test_conflicting_numbers_drop_the_question_and_duplicates_are_merged():
    a = make_doc("rev_a.md", "# Manual\n\n## Drain\n\nThe hose must be below 1,000 mm.\n\nFuse: 10 A.\n")
    b = make_doc("rev_b.md", "# Manual\n\n## Drain\n\nThe hose must be below 900 mm.\n\nFuse: 10 A.\n")
    pairs = extract_pairs([a, b], chunk_documents([a, b]))
    assert not [p for p in pairs if p.kind == "numeric"]  # same question, 1,000 mm vs 900 mm
    fuse = [p for p in pairs if p.question == "Drain: what is the fuse?"]
    assert len(fuse) == 1 and fuse[0].source == "rev_a.md"


def test_max_per_chunk_caps_each_chunk_across_kinds():
    rows = "".join(f"| E{i} | Fault {i} | Fix {i} |\n" for i in range(10, 20))
    text = f"# Codes\n\nThe unit stops after 30 minutes.\n\n| Code | Meaning | Fix |\n|---|---|---|\n{rows}"
    pairs = pairs_for("codes.md", text, max_per_chunk=5)
    per_chunk = Counter(p.chunk_id for p in pairs)
    assert max(per_chunk.values()) == 5
    assert {"table", "numeric"} <= {p.kind for p in pairs}


def test_kestrel_pairs_are_grounded_short_unique_and_deterministic(kestrel):
    docs, chunks, pairs = kestrel
    by_id = {c.id: c for c in chunks}
    assert 300 <= len(pairs) <= 1500
    assert set(Counter(p.kind for p in pairs)) == set(GENERATORS)
    assert all(is_grounded(p.answer, by_id[p.chunk_id].text) for p in pairs)
    assert all(by_id[p.chunk_id].source == p.source for p in pairs)
    assert all(len(p.answer.split()) <= 40 for p in pairs)
    assert max(Counter(p.chunk_id for p in pairs).values()) <= 12
    norm = [" ".join(re.findall(r"\w+", p.question.lower())) for p in pairs]
    assert len(norm) == len(set(norm))
    assert [p.to_dict() for p in extract_pairs(docs, chunks)] == [p.to_dict() for p in pairs]
    assert QAPair.from_dict(pairs[0].to_dict()) == pairs[0]


def test_kestrel_specific_facts(kestrel):
    got = qa(kestrel[2])
    assert got["What is the meaning of E24?"] == "Drain pump blocked"
    assert "drain pump" in got["What does E24 mean?"] and "blocked" in got["What does E24 mean?"]
    assert got["Which part number is the drain pump assembly (compact)?"] == "KP-2211"
    assert got["What is the price (EUR) of KP-2210?"] == "38.50 EUR"
    assert got["What does P15 mean?"] == "Frost protection active"
    assert got["What is the manager of Kestrel Service Centre Brennvik Harbour?"] == "Tomas Ferreday"
    assert got["Which model number is the Kestrel Quietline?"] == "DW-4500"
    # The superseded revision A says 1,000 mm, revision B 900 mm: that blank is not asked at all.
    assert not [q for q, a in got.items() if a in ("900 mm", "1,000 mm") and "between 400 mm and ___" in q]


def test_chinese_patterns_are_asked_in_chinese():
    table = pairs_for("spec.md", "# 规格\n\n| 型号 | 额定功率 | 容量 |\n|---|---|---|\n| LS-60A | 2 千瓦 | 60 升 |\n")
    assert qa(table, "table")["LS-60A的额定功率是什么？"] == "2 千瓦"
    text = "# 安装指南\n\n## 排烟管\n\n排烟管的最大长度为3米，弯头不超过两个。请由专业人员安装。\n"
    question = "根据《安装指南》“排烟管”一节，“排烟管的最大长度为___，弯头不超过两个。”中空缺的数值是多少？"
    assert qa(pairs_for("guide.md", text), "numeric") == {question: "3米"}


def test_the_chinese_sample_domain_gives_grounded_chinese_questions():
    docs = load_documents(LANSHAN / "docs")[0]
    chunks = chunk_documents(docs)
    pairs = extract_pairs(docs, chunks)
    by_id = {c.id: c for c in chunks}
    assert len(pairs) > 300
    assert sum(is_chinese(p.question) for p in pairs) >= 0.9 * len(pairs)
    assert {"table", "record", "numeric"} <= {p.kind for p in pairs}
    assert all(is_grounded(p.answer, by_id[p.chunk_id].text) for p in pairs if p.kind != "heading")
