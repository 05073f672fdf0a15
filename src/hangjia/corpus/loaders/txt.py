"""Plain-text loader: headings are underlined, ALL-CAPS or numbered lines; rules and page headers/footers dropped."""

from __future__ import annotations

import re
from collections import Counter

from hangjia.corpus.text import Block, Section, assemble, decode, normalise, one_line

_RULE = re.compile(r"^\s*([=\-_*~])\1{2,}\s*$")  # ----- or ===== (one unbroken run)
_NUMBERED = re.compile(r"^\d+(\.\d+)*\.?\s+[A-Z]")  # "3. Installation", "1.1 Scope of delivery"


def _is_txt_heading(lines: list[str], i: int) -> bool:
    line = lines[i]
    text = line.strip()
    prev_blank = i == 0 or not lines[i - 1].strip()
    boxed = i > 0 and bool(_RULE.match(lines[i - 1]))  # a line under a rule starts a banner, not a paragraph
    if not text or not (prev_blank or boxed) or line != line.lstrip() or len(text) > 80 or _RULE.match(line):
        return False
    if prev_blank and i + 1 < len(lines) and _RULE.match(lines[i + 1]):
        return True  # underlined with ==== or ----
    letters = [c for c in text if c.isalpha()]
    # Chinese characters are alphabetic and have no case: only cased letters make an ALL-CAPS heading.
    if sum(c.isupper() for c in letters) >= 3 and text.upper() == text:
        return True  # ALL-CAPS line such as "P01  LOW WATER FLOW"
    return bool(_NUMBERED.match(text)) and len(text.split()) <= 8 and text[-1] not in ".:;,"


_PAGE_NUMBER = re.compile(r"\bpage\s+\d+(\s+of\s+\d+)?\b", re.IGNORECASE)


def _page_key(line: str) -> str:
    line = one_line(line)
    return _PAGE_NUMBER.sub("page #", line)  # "Page 2 of 5 ..." and "Page 3 of 5 ..." are the same footer


def _page_noise(lines: list[str]) -> set[str]:
    """Page headers/footers: the same long line on 3+ pages, e.g. "Page 2 of 5 ... KHA-IG-HP-03"."""
    keys = Counter(_page_key(ln) for ln in lines if len(ln.strip()) >= 20 and not _RULE.match(ln))
    return {k for k, n in keys.items() if n >= 3}


def load_txt(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    lines = normalise(decode(raw)).split("\n")
    noise = _page_noise(lines)
    blocks: list[Block] = []
    title, body = "", []
    for i, line in enumerate(lines):
        # Rules are decoration; page headers/footers are dropped except at the top, where they hold the title.
        if _RULE.match(line) or (i >= 5 and _page_key(line) in noise):
            continue
        if _is_txt_heading(lines, i):
            blocks.append((title, "\n".join(body)))
            title, body = one_line(line), []
        body.append(line)
    blocks.append((title, "\n".join(body)))
    return assemble(blocks)
