"""Markdown loader: ATX headings start sections; inline markup, table separators and rules are stripped."""

from __future__ import annotations

import re

from hangjia.corpus.text import Block, Section, assemble, decode, normalise

_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE = [
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links -> link text
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)"), r"\1"),  # _italic_, not snake_case
    (re.compile(r"`([^`]*)`"), r"\1"),  # inline code
]
_TABLE_SEP = re.compile(r"^[\s|:-]*-[\s|:-]*$")  # |---|:---:| (with a pipe) or a --- rule
_MD_RULE = re.compile(r"^\s*([-*_])(\s*\1){2,}\s*$")


def _strip_inline(line: str) -> str:
    for pattern, repl in _INLINE:
        line = pattern.sub(repl, line)
    return line


def _md_table_row(line: str) -> str:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    return " | ".join(cells).strip()


def load_md(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    blocks: list[Block] = []
    title, body = "", []
    in_fence = False
    for line in normalise(decode(raw)).split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
            continue
        if in_fence:
            body.append(line)
            continue
        heading = _ATX.match(line)
        if heading:
            blocks.append((title, "\n".join(body)))
            title = _strip_inline(heading.group(2))
            body = [title]
        elif (_TABLE_SEP.match(line) and "|" in line) or _MD_RULE.match(line):
            continue  # table separators and horizontal rules are layout, not text
        elif line.lstrip().startswith("|"):
            body.append(_strip_inline(_md_table_row(line)))
        else:
            body.append(_strip_inline(line))
    blocks.append((title, "\n".join(body)))
    return assemble(blocks)
