"""Instruction data in and out: Alpaca and ShareGPT files (JSONL, JSON or Parquet) that LLaMA-Factory trains on.

`export_pairs` writes one file plus its entry in `dataset_info.json` (LLaMA-Factory's registry, schema in its
data/README.md), so `dataset: <name>` with `dataset_dir: <out_dir>` trains on it unchanged. Each record also
carries a `hangjia` object (generator, kind, source, chunk_id, question) that no column mapping names, so
LLaMA-Factory drops it when it aligns the dataset and `import_pairs` can restore the provenance.

`import_pairs` reads Alpaca ({instruction, input, output}), ShareGPT ({conversations: [{from, value}]}) and
OpenAI-style ({messages: [{role, content}]}) records, detected per record. A QAPair is one exchange, so a record
with more than one (a second human turn, or an Alpaca `history`) is refused by default, naming file and line;
`multi_turn="first"` keeps its first exchange instead and logs how many records were cut.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from hangjia.core.errors import HangjiaError
from hangjia.core.jsonl import write_jsonl
from hangjia.core.prompts import SYSTEM_PROMPT
from hangjia.instruct.synth import QAPair

log = logging.getLogger(__name__)

Fmt = Literal["alpaca", "sharegpt"]
FileFormat = Literal["jsonl", "parquet"]

PROVENANCE = ("generator", "kind", "source", "chunk_id", "question")
_PROVENANCE_TYPE = pa.struct([(k, pa.string()) for k in PROVENANCE])
_TURN_TYPE = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))

# dataset_info.json entries, as LLaMA-Factory's data/README.md spells them. The tags repeat its defaults on
# purpose: the file then says what it holds without the reader knowing LLaMA-Factory's defaults.
_COLUMNS: dict[str, dict[str, str]] = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
}
_SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}

_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant"}


class FormatError(HangjiaError, ValueError):
    """A record that is not Alpaca, ShareGPT or OpenAI messages; the message names the file and line."""


# Export -------------------------------------------------------------------------------------------------------


def export_pairs(
    pairs: list[QAPair],
    out_dir: Path,
    name: str,
    *,
    fmt: Fmt = "alpaca",
    file_format: FileFormat = "jsonl",
    system: str | None = SYSTEM_PROMPT,
) -> Path:
    """Write `pairs` to out_dir/<name>.<jsonl|parquet> and register them as `name` in out_dir/dataset_info.json.

    `system` goes in every record's `system` column (None or "" leaves the column out)."""
    if fmt not in _COLUMNS:
        raise HangjiaError(f"Unknown export format '{fmt}'; use alpaca or sharegpt.")
    if file_format not in ("jsonl", "parquet"):
        raise HangjiaError(f"Unknown file format '{file_format}'; use jsonl or parquet.")
    if not name or Path(name).name != name:
        raise HangjiaError(
            f"Dataset name '{name}' must be a plain file name (no folders); it names <name>.{file_format}."
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.{file_format}"
    records = [_record(p, fmt, system) for p in pairs]
    if file_format == "parquet":
        pq.write_table(pa.Table.from_pylist(records, schema=_schema(fmt, system)), path, compression="zstd")
    else:
        write_jsonl(path, records)
    register(out_dir, name, dataset_entry(path.name, fmt, system=bool(system)))
    return path


def _record(pair: QAPair, fmt: Fmt, system: str | None) -> dict[str, Any]:
    if fmt == "alpaca":
        record: dict[str, Any] = {"instruction": pair.user_turn(), "input": "", "output": pair.answer}
    else:
        turns = [{"from": "human", "value": pair.user_turn()}, {"from": "gpt", "value": pair.answer}]
        record = {"conversations": turns}
    if system:
        record["system"] = system
    record["hangjia"] = {k: getattr(pair, k) for k in PROVENANCE}
    return record


def _schema(fmt: Fmt, system: str | None) -> pa.Schema:
    if fmt == "alpaca":
        fields = [("instruction", pa.string()), ("input", pa.string()), ("output", pa.string())]
    else:
        fields = [("conversations", _TURN_TYPE)]
    if system:
        fields.append(("system", pa.string()))
    return pa.schema([*fields, ("hangjia", _PROVENANCE_TYPE)])


def dataset_entry(file_name: str, fmt: Fmt, *, system: bool = True) -> dict[str, Any]:
    """The dataset_info.json entry that makes LLaMA-Factory read `file_name` as `fmt`."""
    columns = dict(_COLUMNS[fmt])
    if system:
        columns["system"] = "system"
    entry: dict[str, Any] = {"file_name": file_name, "formatting": fmt, "columns": columns}
    if fmt == "sharegpt":
        entry["tags"] = dict(_SHAREGPT_TAGS)
    return entry


def register(out_dir: Path, name: str, entry: dict[str, Any]) -> Path:
    """Add or replace `name` in out_dir/dataset_info.json, keeping every other entry."""
    info_path = Path(out_dir) / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise HangjiaError(f"{info_path} is not valid JSON ({e}); fix or remove it and export again.") from None
        if not isinstance(info, dict):
            raise HangjiaError(f"{info_path} should hold a JSON object of datasets; fix or remove it.")
    info[name] = entry
    tmp = info_path.with_name(f".dataset_info.json.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(info_path)  # atomic: a crash never leaves LLaMA-Factory a half-written registry
    return info_path


# Import -------------------------------------------------------------------------------------------------------


def import_pairs(path: Path, *, multi_turn: Literal["error", "first"] = "error") -> list[QAPair]:
    """Pairs from an Alpaca, ShareGPT or OpenAI-messages file (.jsonl, .json holding a list or lines, .parquet).

    Alpaca instruction and input are joined with a blank line. Provenance written by `export_pairs` is restored;
    other records get generator "imported", kind = their format, source = the file name. Records with more than
    one exchange raise unless `multi_turn="first"`, which keeps the first exchange and logs the count."""
    path = Path(path)
    if not path.is_file():
        raise HangjiaError(f"No file at {path}; give the path of a .jsonl, .json or .parquet file.")
    pairs: list[QAPair] = []
    cut: list[str] = []
    for where, record in _records(path):
        pair, more = _pair(record, where, path.name)
        if more:
            if multi_turn != "first":
                raise FormatError(
                    f"{where}: the record has more than one exchange and a pair holds one; "
                    'pass multi_turn="first" to keep only the first exchange of such records.'
                )
            cut.append(where)
        pairs.append(pair)
    if cut:
        log.warning("%d multi-turn records in %s kept their first exchange only (first: %s)", len(cut), path, cut[0])
    return pairs


def _records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) for every record; the location is "file:line" (or "file:row N" for Parquet)."""
    if path.suffix.lower() == ".parquet":
        try:
            rows = pq.read_table(path).to_pylist()
        except (pa.ArrowInvalid, OSError) as e:
            raise FormatError(f"{path}: not a readable Parquet file ({e}).") from None
        for i, row in enumerate(rows, start=1):
            yield f"{path}:row {i}", row
        return
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}:{e.lineno}: invalid JSON ({e.msg}).") from None
        starts = _element_lines(text, len(records))
        for record, line in zip(records, starts, strict=True):
            yield f"{path}:{line}", record
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{n}", json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"{path}:{n}: invalid JSON ({e.msg}); each line should hold one record.") from None


def _element_lines(text: str, count: int) -> list[int]:
    """The line on which each top-level element of a JSON list starts, for error messages."""
    decoder = json.JSONDecoder()
    lines, pos = [], text.index("[") + 1
    for _ in range(count):
        while text[pos] in " \t\r\n,":
            pos += 1
        lines.append(text.count("\n", 0, pos) + 1)
        _, pos = decoder.raw_decode(text, pos)
    return lines


def _pair(record: Any, where: str, file_name: str) -> tuple[QAPair, bool]:
    """The record's first exchange as a pair, and whether it holds more exchanges than that."""
    if not isinstance(record, dict):
        raise FormatError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    if "conversations" in record or "messages" in record:
        kind = "sharegpt" if "conversations" in record else "openai"
        user, answer, more = _first_exchange(record["conversations" if kind == "sharegpt" else "messages"], where)
    elif "instruction" in record and "output" in record:
        kind = "alpaca"
        parts = [record["instruction"], record.get("input") or ""]
        if not all(isinstance(p, str) for p in parts) or not isinstance(record["output"], str):
            raise FormatError(f"{where}: instruction, input and output must be strings.")
        user, answer = "\n".join(p for p in parts if p.strip()), record["output"]
        more = bool(record.get("history"))
    else:
        keys = ", ".join(sorted(record)) or "none"
        raise FormatError(
            f"{where}: not Alpaca (instruction, output), ShareGPT (conversations) or OpenAI (messages); keys: {keys}."
        )
    if not user.strip() or not answer.strip():
        raise FormatError(f"{where}: the question or the answer is empty.")
    meta = record.get("hangjia") if isinstance(record.get("hangjia"), dict) else {}
    question = meta.get("question") or user
    pair = QAPair(
        question=question,
        answer=answer,
        kind=meta.get("kind") or kind,
        chunk_id=meta.get("chunk_id") or f"{file_name}:{where.rsplit(':', 1)[-1]}",
        source=meta.get("source") or file_name,
        generator=meta.get("generator") or "imported",
        prompt="" if user == question else user,
    )
    return pair, more


def _first_exchange(turns: Any, where: str) -> tuple[str, str, bool]:
    """(user text, assistant text, more exchanges follow) from [{from, value}] or [{role, content}] turns."""
    if not isinstance(turns, list):
        raise FormatError(f"{where}: conversations/messages must be a list of turns.")
    said: list[tuple[str, str]] = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise FormatError(f"{where}: each turn must be an object with from/value or role/content.")
        role, text = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if not isinstance(role, str) or not isinstance(text, str):
            raise FormatError(f"{where}: each turn needs from/value or role/content strings.")
        if role != "system":
            said.append((role, text))
    if len(said) < 2 or said[0][0] not in _USER_ROLES or said[1][0] not in _ASSISTANT_ROLES:
        roles = ", ".join(r for r, _ in said) or "none"
        raise FormatError(f"{where}: expected a user turn then an assistant turn, got roles: {roles}.")
    return said[0][1], said[1][1], len(said) > 2
