"""Text shared by every loader: the Section span, UTF-8 decoding, whitespace normalising, and block assembly."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    """A titled span of `Document.text`; for json/csv one record."""

    title: str
    start: int
    end: int


Block = tuple[str, str]  # (section title, section text)


def decode(raw: bytes) -> str:
    if b"\x00" in raw:
        raise ValueError("binary file (contains NUL bytes)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 text (bad byte at offset {e.start})") from None


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def assemble(blocks: list[Block]) -> tuple[str, list[Section]]:
    """Join normalised blocks with blank lines and record each block's span as a section."""
    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for title, body in blocks:
        body = normalise(body)
        if not body.strip():
            continue
        if parts:
            pos += 2  # the "\n\n" separator
        sections.append(Section(title, pos, pos + len(body)))
        parts.append(body)
        pos += len(body)
    return "\n\n".join(parts), sections


def one_line(text: str) -> str:
    return " ".join(text.split())
