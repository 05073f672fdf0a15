"""Alpaca/ShareGPT export and import: round trips, dataset_info.json as LLaMA-Factory's data/README.md specifies it,
hand-written files in each accepted shape, and errors that name the file and line."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hangjia.core.errors import HangjiaError
from hangjia.core.prompts import SYSTEM_PROMPT
from hangjia.instruct.formats import FormatError, export_pairs, import_pairs
from hangjia.instruct.synth import QAPair

PAIRS = [
    QAPair("What is the torque for the M8 bolt?", "25 N·m", "table", "manual.pdf#3", "manual.pdf", "extractive"),
    QAPair("Who signs off a release?", "The duty engineer.\nThen QA.", "faq", "faq.md#0", "faq.md", "self_qa"),
    QAPair(
        "How wide is the door?",
        "900 mm",
        "rag",
        "spec.docx#7",
        "spec.docx",
        "raft",
        prompt="Context:\n[1] (spec.docx) The door is 900 mm wide.\n\nQuestion: How wide is the door?",
    ),
    QAPair("Quelle est la tension ? <b>", "230 V « nominal »", "numeric", "fr.txt#1", "fr.txt", "paraphrase"),
]


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def as_llamafactory_reads(out_dir: Path, name: str) -> list[tuple[str, str, str]]:
    """(system, user, assistant) per row, following data/README.md: the entry's file_name, formatting, columns
    and tags, with its defaults; alpaca's user turn is "instruction\\ninput". Loaded with `datasets` as it does."""
    from datasets import load_dataset

    entry = json.loads((out_dir / "dataset_info.json").read_text())[name]
    path = out_dir / entry["file_name"]
    builder = "parquet" if path.suffix == ".parquet" else "json"
    rows = load_dataset(builder, data_files=str(path), split="train", cache_dir=str(out_dir / ".hf-cache"))
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    read = []
    for row in rows:
        system = row[columns["system"]] if "system" in columns else ""
        if entry.get("formatting", "alpaca") == "alpaca":
            query = [row[columns.get("prompt", "instruction")], row[columns.get("query", "input")]]
            user, answer = "\n".join(q for q in query if q), row[columns.get("response", "output")]
        else:
            turns = row[columns.get("messages", "conversations")]
            role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
            assert [t[role] for t in turns] == [tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")]
            user, answer = turns[0][content], turns[1][content]
        read.append((system, user, answer))
    return read


# Export and round trip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt"])
def test_round_trip_keeps_pairs_and_provenance(tmp_path, fmt, file_format):
    path = export_pairs(PAIRS, tmp_path, "kestrel_qa", fmt=fmt, file_format=file_format)
    assert path == tmp_path / f"kestrel_qa.{file_format}"
    back = import_pairs(path)
    assert [p.to_dict() for p in back] == [p.to_dict() for p in PAIRS]
    assert [p.user_turn() for p in back] == [p.user_turn() for p in PAIRS]


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt"])
def test_llamafactory_reads_the_export_as_the_training_example(tmp_path, fmt, file_format):
    export_pairs(PAIRS, tmp_path, "qa", fmt=fmt, file_format=file_format)
    assert as_llamafactory_reads(tmp_path, "qa") == [(SYSTEM_PROMPT, p.user_turn(), p.answer) for p in PAIRS]


def test_alpaca_record_shape(tmp_path):
    path = export_pairs(PAIRS[2:3], tmp_path, "qa", fmt="alpaca")
    (record,) = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert record == {
        "instruction": PAIRS[2].prompt,
        "input": "",
        "output": "900 mm",
        "system": SYSTEM_PROMPT,
        "hangjia": {
            "generator": "raft",
            "kind": "rag",
            "source": "spec.docx",
            "chunk_id": "spec.docx#7",
            "question": "How wide is the door?",
        },
    }


def test_sharegpt_record_shape_and_no_system(tmp_path):
    path = export_pairs(PAIRS[:1], tmp_path, "qa", fmt="sharegpt", file_format="parquet", system=None)
    (record,) = pq.read_table(path).to_pylist()
    assert record["conversations"] == [
        {"from": "human", "value": PAIRS[0].question},
        {"from": "gpt", "value": "25 N·m"},
    ]
    assert "system" not in record
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert "system" not in info["qa"]["columns"]


def test_dataset_info_follows_llamafactory_schema(tmp_path):
    export_pairs(PAIRS, tmp_path, "qa_alpaca", fmt="alpaca", file_format="jsonl")
    export_pairs(PAIRS, tmp_path, "qa_sharegpt", fmt="sharegpt", file_format="parquet")
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == {
        "qa_alpaca": {
            "file_name": "qa_alpaca.jsonl",
            "formatting": "alpaca",
            "columns": {"prompt": "instruction", "query": "input", "response": "output", "system": "system"},
        },
        "qa_sharegpt": {
            "file_name": "qa_sharegpt.parquet",
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "system": "system"},
            "tags": {
                "role_tag": "from",
                "content_tag": "value",
                "user_tag": "human",
                "assistant_tag": "gpt",
                "system_tag": "system",
            },
        },
    }
    # Provenance rides along under a column no mapping names, so LLaMA-Factory's aligner drops it.
    for entry in info.values():
        assert "hangjia" not in entry["columns"].values()
        assert (tmp_path / entry["file_name"]).is_file()


def test_dataset_info_merges_with_existing_entries(tmp_path):
    other = {"alpaca_en_demo": {"file_name": "alpaca_en_demo.json"}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(other))
    export_pairs(PAIRS, tmp_path, "qa", fmt="sharegpt")
    export_pairs(PAIRS, tmp_path, "qa", fmt="alpaca")  # the same name again replaces its entry
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert list(info) == ["alpaca_en_demo", "qa"]
    assert info["alpaca_en_demo"] == other["alpaca_en_demo"]
    assert info["qa"]["formatting"] == "alpaca"


def test_corrupt_dataset_info_is_reported_not_overwritten(tmp_path):
    (tmp_path / "dataset_info.json").write_text("{not json")
    with pytest.raises(HangjiaError, match="dataset_info.json is not valid JSON"):
        export_pairs(PAIRS, tmp_path, "qa")
    assert (tmp_path / "dataset_info.json").read_text() == "{not json"


def test_empty_export_round_trips(tmp_path):
    for file_format in ("jsonl", "parquet"):
        assert import_pairs(export_pairs([], tmp_path, f"empty_{file_format}", file_format=file_format)) == []


# Import of files written elsewhere ------------------------------------------------------------------------------


def test_import_alpaca_json_list_joins_instruction_and_input(tmp_path):
    path = tmp_path / "alpaca.json"
    records = [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name the capital of Peru.", "input": "", "output": "Lima", "system": "Be brief."},
    ]
    path.write_text(json.dumps(records, indent=2))
    first, second = import_pairs(path)
    assert first.question == "Translate to French.\nGood morning"
    assert first.user_turn() == first.question and first.prompt == ""
    assert (first.answer, first.generator, first.kind, first.source) == ("Bonjour", "imported", "alpaca", "alpaca.json")
    assert (second.question, second.answer) == ("Name the capital of Peru.", "Lima")
    assert first.chunk_id != second.chunk_id


def test_import_sharegpt_jsonl_skips_system_turn(tmp_path):
    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "conversations": [
                    {"from": "system", "value": "You are terse."},
                    {"from": "human", "value": "2+2?"},
                    {"from": "gpt", "value": "4"},
                ]
            }
        ],
    )
    (pair,) = import_pairs(path)
    assert (pair.question, pair.answer, pair.kind, pair.generator) == ("2+2?", "4", "sharegpt", "imported")


def test_import_openai_messages(tmp_path):
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Boiling point of water at sea level?"},
        {"role": "assistant", "content": "100 °C"},
    ]
    path = write_jsonl(tmp_path / "openai.jsonl", [{"messages": messages}])
    (pair,) = import_pairs(path)
    assert (pair.question, pair.answer, pair.kind) == ("Boiling point of water at sea level?", "100 °C", "openai")


def test_import_parquet_without_provenance(tmp_path):
    path = tmp_path / "hand.parquet"
    table = pa.Table.from_pylist([{"instruction": "Q1", "input": None, "output": "A1"}])
    pq.write_table(table, path)
    (pair,) = import_pairs(path)
    assert (pair.question, pair.answer, pair.source, pair.generator) == ("Q1", "A1", "hand.parquet", "imported")


def test_import_accepts_utf8_bom(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"instruction": "Q", "output": "A"}).encode() + b"\n")
    assert [(p.question, p.answer) for p in import_pairs(path)] == [("Q", "A")]


# Multi-turn and malformed records -------------------------------------------------------------------------------

MULTI = {
    "conversations": [
        {"from": "human", "value": "First?"},
        {"from": "gpt", "value": "One."},
        {"from": "human", "value": "Second?"},
        {"from": "gpt", "value": "Two."},
    ]
}


def test_multi_turn_is_refused_by_default_naming_the_line(tmp_path):
    path = write_jsonl(tmp_path / "multi.jsonl", [{"instruction": "Q", "output": "A"}, MULTI])
    with pytest.raises(FormatError, match=rf"{re.escape(str(path))}:2: .*more than one exchange.*multi_turn=\"first\""):
        import_pairs(path)


def test_multi_turn_first_keeps_first_exchange_and_says_so(tmp_path, caplog):
    history = {"instruction": "Q", "output": "A", "history": [["earlier?", "yes"]]}
    path = write_jsonl(tmp_path / "multi.jsonl", [MULTI, {"instruction": "Q0", "output": "A0"}, history])
    with caplog.at_level(logging.WARNING, logger="hangjia.instruct.formats"):
        pairs = import_pairs(path, multi_turn="first")
    assert [(p.question, p.answer) for p in pairs] == [("First?", "One."), ("Q0", "A0"), ("Q", "A")]
    assert "2 multi-turn records" in caplog.text and f"{path}:1" in caplog.text


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("{bad json", "invalid JSON"),
        ('{"prompt": "Q", "completion": "A"}', r"not Alpaca .* keys: completion, prompt"),
        ('["Q", "A"]', "expected a JSON object"),
        ('{"instruction": "Q", "output": ""}', "empty"),
        ('{"conversations": [{"from": "gpt", "value": "A"}, {"from": "human", "value": "Q"}]}', "roles: gpt, human"),
        ('{"messages": [{"role": "user"}]}', "role/content"),
    ],
)
def test_malformed_record_names_file_and_line(tmp_path, line, match):
    path = tmp_path / "broken.jsonl"
    good = json.dumps({"instruction": "Q", "output": "A"})
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(ValueError, match=match) as err:
        import_pairs(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert isinstance(err.value, HangjiaError)  # the CLI prints it as one sentence, no traceback


def test_malformed_element_of_json_list_names_its_line(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[\n  {"instruction": "Q", "output": "A"},\n  {"instruction": "Q"}\n]\n')
    with pytest.raises(FormatError, match=rf"^{re.escape(str(path))}:3: not Alpaca"):
        import_pairs(path)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(HangjiaError, match="No file at"):
        import_pairs(tmp_path / "nope.jsonl")
