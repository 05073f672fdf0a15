"""Word loader (python-docx): Title and Heading 1-4 paragraphs start sections; tables become "a | b" rows in place."""

from __future__ import annotations

import io

import docx
from docx.table import Table

from hangjia.corpus.text import Block, Section, assemble, one_line

_HEADING_STYLES = {"title", "heading 1", "heading 2", "heading 3", "heading 4"}


def _open(raw: bytes) -> docx.document.Document:
    try:
        return docx.Document(io.BytesIO(raw))
    except Exception as e:  # not a zip, a zip without word/document.xml, broken XML, ...
        raise ValueError(f"corrupt Word document: {e or type(e).__name__}") from None


def _table_rows(table: Table) -> list[str]:
    rows = []
    for row in table.rows:
        cells, last = [], None
        for cell in row.cells:
            if cell._tc is last:  # a merged cell is listed once per grid column it spans
                continue
            last = cell._tc
            cells.append(one_line(cell.text))
        if any(cells):
            rows.append(" | ".join(cells))
    return rows


def load_docx(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    document = _open(raw)
    blocks: list[Block] = []
    title, paragraphs = "", []
    # iter_inner_content keeps paragraphs and tables in document order.
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            paragraphs.append("\n".join(_table_rows(item)))
            continue
        text = item.text.strip()
        style = (item.style.name if item.style is not None else "").lower()
        if text and style in _HEADING_STYLES:
            blocks.append((title, "\n\n".join(paragraphs)))
            title, paragraphs = one_line(text), []
        paragraphs.append(text)
    blocks.append((title, "\n\n".join(paragraphs)))
    return assemble(blocks)
