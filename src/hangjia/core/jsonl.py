"""JSON Lines in and out: one UTF-8 JSON object per line, Chinese kept as characters (not \\u escapes)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write `rows` to `path` (replacing it); the number written."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of `path`, one at a time; blank lines are skipped."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every row of `path`; blank lines are skipped."""
    return list(iter_jsonl(path))
