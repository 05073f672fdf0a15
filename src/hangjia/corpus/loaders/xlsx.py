"""Excel loader (openpyxl): one section per sheet; under the first row as header, each row is one
"column: value; column: value" line, as the csv loader renders a row."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime, time

from openpyxl import load_workbook

from hangjia.corpus.loaders.records import _scalar
from hangjia.corpus.text import Block, Section, assemble


def _value(value: object) -> str:
    if isinstance(value, datetime) and value.time() == time(0):
        return value.date().isoformat()  # a date cell, not "2024-05-01 00:00:00"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _scalar(value)


def _sheet_lines(rows: Iterator[tuple]) -> list[str]:
    rows = (row for row in rows if any(_value(v) for v in row))  # skip empty rows
    header = [_value(v) for v in next(rows, ())]
    lines = []
    for row in rows:
        names = header + [f"column {i}" for i in range(len(header) + 1, len(row) + 1)]
        cells = [(name or f"column {i}", _value(v)) for i, (name, v) in enumerate(zip(names, row, strict=False), 1)]
        lines.append("; ".join(f"{name}: {value}" for name, value in cells if value))
    return lines


def load_xlsx(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    blocks: list[Block] = []
    try:
        # read_only streams rows instead of building every cell; data_only gives formulas' cached values.
        workbook = load_workbook(io.BytesIO(raw), read_only=True, data_only=True)
    except Exception as e:  # not a zip, missing parts, broken XML, ...
        raise ValueError(f"corrupt Excel workbook: {e or type(e).__name__}") from None
    try:
        for sheet in workbook.worksheets:
            try:
                lines = _sheet_lines(sheet.iter_rows(values_only=True))
            except Exception as e:  # broken sheet XML shows only when its rows are streamed
                raise ValueError(f"corrupt Excel workbook: sheet {sheet.title!r} could not be read ({e})") from None
            blocks.append((sheet.title, "\n".join(lines)))
    finally:
        workbook.close()  # read_only keeps the archive open until closed
    return assemble(blocks)
