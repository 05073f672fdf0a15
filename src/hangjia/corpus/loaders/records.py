"""Record loaders (json, jsonl, csv, tsv): one section per record, rendered as "key: value" text."""

from __future__ import annotations

import csv
import io
import json

from hangjia.corpus.text import Block, Section, assemble, decode, one_line

# ---------------------------------------------------------------- json, jsonl

_LABEL_KEYS = ("name", "title", "id")


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else one_line(str(value))


def _flatten(obj: dict, prefix: str = "") -> list[str]:
    """Render an object as "key: value" lines; nested keys dotted, lists of scalars joined with ", "."""
    lines = []
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            lines.extend(_flatten(value, f"{name}."))
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value) and value:
            for n, item in enumerate(value, 1):
                lines.extend(_flatten(item, f"{name}.{n}."))
        elif isinstance(value, list):
            joined = ", ".join(_scalar(v) if not isinstance(v, list | dict) else json.dumps(v) for v in value)
            if joined:
                lines.append(f"{name}: {joined}")
        elif _scalar(value):
            lines.append(f"{name}: {_scalar(value)}")
    return lines


def _record_label(record: dict, n: int) -> str:
    for key in _LABEL_KEYS:
        if _scalar(record.get(key)):
            return _scalar(record[key])
    return f"record {n}"


def _record_blocks(records: list) -> list[Block]:
    blocks = []
    for n, record in enumerate(records, 1):
        if isinstance(record, dict):
            blocks.append((_record_label(record, n), "\n".join(_flatten(record))))
        else:
            blocks.append((f"record {n}", _scalar(record)))
    return blocks


def _json_error(e: json.JSONDecodeError, line: int | None = None) -> ValueError:
    return ValueError(f"invalid JSON at line {line or e.lineno}: {e.msg}")


def load_json(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    try:
        data = json.loads(decode(raw))
    except json.JSONDecodeError as e:
        raise _json_error(e) from None
    if isinstance(data, list):
        return assemble(_record_blocks(data))
    if not isinstance(data, dict):
        raise ValueError("JSON holds a single value, not a list of records or an object")
    # Lists of objects become one section per record; everything else goes into a leading section.
    is_records = {k: bool(v) and isinstance(v, list) and all(isinstance(x, dict) for x in v) for k, v in data.items()}
    header = {k: v for k, v in data.items() if not is_records[k]}
    header_title = next((_scalar(header[k]) for k in ("title", "name") if _scalar(header.get(k))), "")
    blocks: list[Block] = [(header_title, "\n".join(_flatten(header)))]
    for key, value in data.items():
        if is_records[key]:
            blocks.extend(_record_blocks(value))
    return assemble(blocks)


def load_jsonl(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    records = []
    for n, line in enumerate(decode(raw).splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _json_error(e, n) from None
    return assemble(_record_blocks(records))


# ---------------------------------------------------------------- csv, tsv


def _load_table(raw: bytes, delimiter: str) -> tuple[str, list[Section]]:
    reader = csv.DictReader(io.StringIO(decode(raw), newline=""), delimiter=delimiter)
    if not reader.fieldnames:
        raise ValueError("no header row")
    first = reader.fieldnames[0]
    blocks: list[Block] = []
    try:
        for n, row in enumerate(reader, 1):
            fields = [(k if k is not None else "extra", v) for k, v in row.items()]
            values = [(k, ", ".join(v) if isinstance(v, list) else one_line(v or "")) for k, v in fields]
            line = "; ".join(f"{k}: {v}" for k, v in values if v)
            blocks.append((one_line(row.get(first) or "") or f"row {n}", line))
    except csv.Error as e:
        raise ValueError(f"malformed CSV at line {reader.line_num}: {e}") from None
    return assemble(blocks)


def load_csv(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    return _load_table(raw, ",")


def load_tsv(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    return _load_table(raw, "\t")
