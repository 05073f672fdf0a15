"""Parquet loader (pyarrow): one section per row, read batch by batch.

With a string column named text, content or body, a row is that text followed by its other scalar columns
as "key: value" lines; otherwise a row is one "column: value; column: value" line, as in the csv loader.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from hangjia.corpus.loaders.records import _record_label, _scalar
from hangjia.corpus.text import Block, Section, assemble

_TEXT_COLUMNS = ("text", "content", "body")
_BATCH_ROWS = 1024


def _text_column(schema: pa.Schema) -> str | None:
    strings = {f.name.lower(): f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)}
    return next((strings[name] for name in _TEXT_COLUMNS if name in strings), None)


def _cell(value: object) -> str:
    """A scalar as text, a list of scalars joined with ", "; nested records and binary values are left out."""
    if isinstance(value, list):
        return ", ".join(text for text in map(_cell, value) if text)
    return "" if isinstance(value, dict | bytes) else _scalar(value)


def _rows(file: pq.ParquetFile) -> Iterator[dict]:
    for batch in file.iter_batches(batch_size=_BATCH_ROWS):
        yield from batch.to_pylist()


def load_parquet(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    try:
        file = pq.ParquetFile(io.BytesIO(raw))
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"corrupt Parquet file: {e}") from None
    text_column = _text_column(file.schema_arrow)
    first = file.schema_arrow.names[0] if file.schema_arrow.names else None
    blocks: list[Block] = []
    try:
        for n, row in enumerate(_rows(file), 1):
            cells = [(key, _cell(value)) for key, value in row.items() if key != text_column]
            if text_column is not None:
                lines = [row[text_column] or "", *(f"{key}: {value}" for key, value in cells if value)]
                blocks.append((_record_label(row, n), "\n".join(lines)))
            else:
                line = "; ".join(f"{key}: {value}" for key, value in cells if value)
                blocks.append((_cell(row.get(first)) or f"row {n}", line))
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"corrupt Parquet file: {e}") from None
    return assemble(blocks)
