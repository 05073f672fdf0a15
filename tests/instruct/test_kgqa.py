"""Knowledge-graph pairs: reading triples files, triples from record documents, templates, joins, teacher rewording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hangjia.corpus.chunk import chunk_documents
from hangjia.corpus.documents import LOADERS, Document
from hangjia.instruct.kgqa import Triple, kg_pairs, load_triples, triples_from_records
from hangjia.instruct.synth import is_grounded
from tests.paths import CORPUS_FIXTURES, KESTREL_DOCS

PARTS_CSV = """part_number,description,compatible_models,price_eur,availability
KP-2210,Drain pump assembly,DW-4500; DW-6200,38.50,in stock
KP-4100,Door seal,DW-3100,22.50,in stock
KP-4101,Door seal,DW-4500,24.50,low stock
KP-1105,Inlet valve (double solenoid),DW-3100; DW-4500,27.80,in stock
"""


def make_doc(source: str, raw: bytes) -> Document:
    body, sections = LOADERS[Path(source).suffix](raw, source)
    return Document(source, Path(source).suffix.lstrip("."), body, sections, "0" * 64)


class ScriptedTeacher:
    """Replies by a function of the last user message; None stands for a failed request."""

    name = "scripted"

    def __init__(self, reply):
        self.reply = reply
        self.prompts: list[str] = []

    def complete(self, conversations, *, max_tokens=256, temperature=0.7, seed=0):
        self.prompts += [c[-1]["content"] for c in conversations]
        return [self.reply(c[-1]["content"]) for c in conversations]


def qa(pairs, kind=None) -> dict[str, str]:
    return {p.question: p.answer for p in pairs if kind is None or p.kind == kind}


# ---------------------------------------------------------------- load_triples


def test_load_triples_from_csv_json_and_jsonl(tmp_path):
    (tmp_path / "kg.csv").write_text("subject,relation,object\nKP-2210,price,38.50 EUR\n,,\nDW-4500,width,45 cm\n")
    heads = [{"head": "KP-2210", "relation": "supplier", "tail": "Norvik Pumps"}]
    (tmp_path / "kg.json").write_text(json.dumps(heads))
    (tmp_path / "kg.jsonl").write_text('{"Subject": "E24", "Relation": "meaning", "Object": "Drain pump blocked"}\n\n')
    (tmp_path / "kg.tsv").write_text("subject\trelation\tobject\nKSC-01\tcity\tAldermoor\n")

    assert load_triples(tmp_path / "kg.csv") == [
        Triple("KP-2210", "price", "38.50 EUR", "", "kg.csv"),
        Triple("DW-4500", "width", "45 cm", "", "kg.csv"),
    ]
    assert load_triples(tmp_path / "kg.json") == [Triple("KP-2210", "supplier", "Norvik Pumps", "", "kg.json")]
    assert load_triples(tmp_path / "kg.jsonl") == [Triple("E24", "meaning", "Drain pump blocked", "", "kg.jsonl")]
    assert load_triples(tmp_path / "kg.tsv") == [Triple("KSC-01", "city", "Aldermoor", "", "kg.tsv")]


@pytest.mark.parametrize(
    "name,content,says",
    [
        ("bad.csv", "subject,predicate_x,object\nA,b,c\n", "no relation column"),
        ("bad.json", '[{"subject": "A", "relation": "b"', "not valid JSON"),
        ("bad.jsonl", '{"subject": "A", "relation": "b", "object": ""}\n', "empty object"),
        ("bad.json", '["A", "b", "c"]', "not an object"),
        ("bad.xml", "<kg/>", "unsupported triples file type"),
    ],
)
def test_bad_triples_file_is_a_clear_error_naming_the_file(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=says) as info:
        load_triples(path)
    assert str(path) in str(info.value)


def test_missing_triples_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="could not be read"):
        load_triples(tmp_path / "nope.csv")


# ---------------------------------------------------------------- triples from records


def test_csv_rows_become_triples_with_the_chunk_holding_the_row():
    doc = make_doc("parts.csv", PARTS_CSV.encode())
    chunks = chunk_documents([doc])
    triples = triples_from_records([doc], chunks)
    by_id = {c.id: c for c in chunks}

    assert Triple("KP-2210", "price_eur", "38.50", by_id[triples[0].chunk_id].id, "parts.csv") in triples
    assert {t.relation for t in triples} == {"description", "compatible_models", "price_eur", "availability"}
    assert not any(t.relation == "part_number" for t in triples)  # the key column is the subject
    assert len(triples) == 4 * 4
    for t in triples:  # each triple points at the chunk that holds its row
        assert "part_number: " + t.subject in by_id[t.chunk_id].text
        assert f"{t.relation}: {t.object}" in by_id[t.chunk_id].text
    assert Triple("KP-2210", "compatible_models", "DW-4500; DW-6200", triples[0].chunk_id, "parts.csv") in triples


def test_json_records_use_their_label_and_xlsx_rows_their_key_column():
    records = [{"name": "Aldermoor Central", "id": "KSC-01", "city": "Aldermoor", "hours": {"sat": "09:00-13:00"}}]
    doc = make_doc("centres.json", json.dumps(records).encode())
    sheet = make_doc("parts.xlsx", (CORPUS_FIXTURES / "parts.xlsx").read_bytes())
    triples = triples_from_records([doc, sheet, make_doc("notes.md", b"# Notes\n\nprice: 3 EUR\n")], [])
    facts = {(t.subject, t.relation, t.object) for t in triples}

    assert {("Aldermoor Central", "id", "KSC-01"), ("Aldermoor Central", "hours.sat", "09:00-13:00")} <= facts
    assert ("KP-1", "price_eur", "39.5") in facts and ("E24", "meaning", "Drain blocked") in facts
    assert not any(t.source == "notes.md" for t in triples)  # prose is not a record
    assert all(t.chunk_id == "" for t in triples)  # no chunks given


def test_kestrel_price_list_gives_natural_grounded_questions():
    doc = make_doc("spare_parts_prices.csv", (KESTREL_DOCS / "spare_parts_prices.csv").read_bytes())
    chunks = chunk_documents([doc])
    by_id = {c.id: c for c in chunks}
    pairs, drops = kg_pairs(triples_from_records([doc], chunks), chunks_by_id=by_id)
    got = qa(pairs, "triple")

    assert got["What is the price of the drain pump assembly?"] == "38.50 EUR"
    assert got["What is the description of KP-2210?"] == "Drain pump assembly"  # not "... of the drain pump assembly"
    assert got["What are the compatible models of KP-4101?"] == "DW-6200"  # three parts are called "Door seal"
    assert "What is the price of the door seal?" not in got
    assert all(is_grounded(p.answer, by_id[p.chunk_id].text) for p in pairs)
    assert all(p.generator == "kg" and p.source == "spare_parts_prices.csv" for p in pairs)
    assert not drops


def test_triple_not_grounded_in_its_chunk_is_dropped():
    doc = make_doc("parts.csv", PARTS_CSV.encode())
    chunks = chunk_documents([doc])
    cid = triples_from_records([doc], chunks)[0].chunk_id
    triples = [Triple("KP-2210", "price_eur", "41.00", cid, "parts.csv"), Triple("KP-2210", "colour", "grey", cid)]
    pairs, drops = kg_pairs(triples, chunks_by_id={c.id: c for c in chunks})
    assert pairs == [] and drops["ungrounded"] == 2


# ---------------------------------------------------------------- templates and joins

KG = [
    Triple("DW-4500", "drain_pump", "KP-2210"),
    Triple("DW-4500", "width", "45 cm"),
    Triple("KP-2210", "price_eur", "38.50"),
    Triple("KP-2210", "supplier", "Norvik Pumps"),
    Triple("Norvik Pumps", "country", "Denmark"),
    Triple("Norvik Pumps", "located_in", "Aarhus"),
]


def test_one_question_per_triple_and_relation_wording():
    got = qa(kg_pairs(KG, multi_hop=False)[0])
    assert got == {
        "What is the drain pump of DW-4500?": "KP-2210",
        "What is the width of DW-4500?": "45 cm",
        "What is the price of KP-2210?": "38.50 EUR",
        "What is the supplier of KP-2210?": "Norvik Pumps",
        "What is the country of Norvik Pumps?": "Denmark",
        "What is Norvik Pumps located in?": "Aarhus",
    }


def test_multi_hop_joins_through_a_subject_and_matches_a_brute_force_join():
    pairs = kg_pairs(KG)[0]
    hops = qa(pairs, "multi_hop")
    assert hops["What is the price of the drain pump of DW-4500?"] == "38.50 EUR"
    assert hops["What is the country of the supplier of KP-2210?"] == "Denmark"
    assert hops["What is the supplier of the drain pump of DW-4500?"] == "Norvik Pumps"
    assert hops["What is the supplier of KP-2210 located in?"] == "Aarhus"
    # Reference: every (a -r1-> b, b -r2-> c); a three-hop chain is never asked.
    expected = {(a.subject, a.relation, b.relation, b.object) for a in KG for b in KG if a.object == b.subject}
    assert len(expected) == 4
    assert sorted(hops.values()) == sorted("38.50 EUR" if c == "38.50" else c for *_, c in expected)
    assert all(p.generator == "kg" for p in pairs)
    # The first hop's chunk is the support a retrieval-aware example shows beside the answer's chunk.
    located = [
        Triple("DW-4500", "drain_pump", "KP-2210", "appliances#1"),
        Triple("KP-2210", "price", "38.50", "prices#4"),
    ]
    (hop,) = qa_pairs(kg_pairs(located)[0], "multi_hop")
    assert (hop.chunk_id, hop.support) == ("prices#4", ["appliances#1"])


def qa_pairs(pairs, kind):
    return [p for p in pairs if p.kind == kind]


def test_no_join_through_an_ambiguous_middle():
    kg = [
        Triple("DW-4500", "pump", "KP-2210"),
        Triple("DW-4500", "pump", "KP-2211"),  # two pumps: "the pump of DW-4500" is not one part
        Triple("KP-2210", "price", "38.50"),
        Triple("DW-6200", "heater", "KP-1425"),
        Triple("KP-1425", "price", "89.90"),
        Triple("KP-1425", "price", "92.00"),  # two prices: the join has no single answer
        Triple("DW-3100", "seal", "KP-4100"),  # KP-4100 is never a subject: nothing to join
    ]
    pairs, drops = kg_pairs(kg)
    assert qa(pairs, "multi_hop") == {}
    assert drops["ambiguous_join"] == 2
    assert qa(pairs, "triple")["What is the pump of DW-4500?"] == "KP-2210; KP-2211"


def test_names_label_subjects_only_when_unique_and_conflicts_are_dropped():
    kg = [Triple("KP-1", "name", "Door seal"), Triple("KP-1", "weight", "1 kg"), Triple("kp-1", "weight", "2 kg")]
    got = qa(kg_pairs(kg)[0])
    assert got["What is the weight of the door seal?"] == "1 kg; 2 kg"  # one subject, two values: together
    assert got["What is the name of KP-1?"] == "Door seal"
    kg += [Triple("KP-2", "name", "Hose"), Triple("KP-2", "weight", "3 kg"), Triple("KP-3", "name", "Hose")]
    assert "What is the weight of KP-2?" in qa(kg_pairs(kg)[0])  # "Hose" names two parts: the code is used
    # Two sources, one with the unit in the column name: the same question with two answers is not trusted.
    pairs, drops = kg_pairs([Triple("KP-9", "price_eur", "38.50"), Triple("KP-9", "price", "40")])
    assert pairs == [] and drops["conflicting_answers"] == 2


def test_teacher_rewording_keeps_numbers_and_codes_or_is_dropped():
    def reply(prompt: str) -> str | None:
        question = prompt.rsplit("Question: ", 1)[1]
        if "price of KP-2210" in question:
            return "Rewritten question: How much does KP-2210 cost?"  # keeps the code: kept
        if "width" in question:
            return "How wide is the dishwasher?"  # lost DW-4500: dropped
        if "supplier" in question:
            return None
        return question  # unchanged: dropped

    teacher = ScriptedTeacher(reply)
    pairs, drops = kg_pairs(KG, multi_hop=False, teacher=teacher, seed=3)
    assert qa(pairs, "kg_paraphrase") == {"How much does KP-2210 cost?": "38.50 EUR"}
    assert drops == {"teacher_lost_code": 1, "teacher_failed": 1, "teacher_unchanged": 3}
    assert len(teacher.prompts) == 6 and all("exactly as written" in p for p in teacher.prompts)
