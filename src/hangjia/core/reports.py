"""One renderer for every report: a small document model written as report.json, report.md and report.html.

A report module builds its numbers as a JSON-ready dict and a `Document` that presents them, then calls `write`:
```
report.json   the data dict itself (indent 2, Chinese kept as characters)
report.md     headings, notes, tables (cells escaped: no live HTML, no broken rows), charts linked as files
report.html   self-contained: the same plus every chart as a base64 PNG data URI
<chart>.png   with chart_files=True, each chart beside the Markdown, which links it
```
Charts are PNG bytes or matplotlib Figures; `figure` makes one drawn by Agg without pyplot (nothing global is
touched, no display needed) and `png` saves one.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Format = Literal["md", "html"]


@dataclass(frozen=True)
class Paragraph:
    """A line of text; `note` shows it muted in HTML; `only` keeps it to one format."""

    text: str
    note: bool = False
    only: Format | None = None


@dataclass(frozen=True)
class Cell:
    """A table cell with a verdict: green or red in HTML; in Markdown prefixed ✓ or ✗ when `mark`."""

    value: Any
    ok: bool
    mark: bool = True


@dataclass(frozen=True)
class Table:
    """Header and rows; a cell is text, a number (right-aligned in HTML, thousands separated) or a `Cell`."""

    header: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Chart:
    """A chart: `title` is its alt text and caption (`caption=False`: alt text only); `file`, its PNG's name
    when written beside the report."""

    title: str
    png: bytes | Figure
    file: str | None = None
    caption: bool = True


@dataclass(frozen=True)
class Pre:
    """Preformatted text, kept as it is: a code block in Markdown, <pre> in HTML."""

    text: str


@dataclass(frozen=True)
class Entry:
    """A labelled record such as a sample: (label, text) lines, the first with the meta items beside it, and
    optional folded preformatted text (`details`: summary, text; HTML only)."""

    fields: list[tuple[str, str]]
    meta: list[str] = field(default_factory=list)
    details: tuple[str, str] | None = None


Block = Paragraph | Table | Chart | Pre | Entry


@dataclass
class Section:
    """A heading (none: blocks straight under the title) of `level` (2: ##, 3: ###) and its blocks."""

    heading: str | None
    blocks: list[Block] = field(default_factory=list)
    level: int = 2


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def charts(self) -> list[Chart]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Chart)]


# ---- charts -----------------------------------------------------------------------------------------------------


def figure(width: float, height: float, **kwargs: Any) -> Figure:
    """A matplotlib Figure drawn by Agg whatever backend pyplot would pick; kwargs go to Figure (e.g. layout)."""
    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def png(fig: Figure, *, dpi: int = 100, tight: bool = False) -> bytes:
    """The figure as PNG bytes; `tight` crops to what was drawn (bbox_inches="tight")."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    return buf.getvalue()


def _png_bytes(chart: Chart) -> bytes:
    return chart.png if isinstance(chart.png, bytes) else png(chart.png)


# ---- writing ----------------------------------------------------------------------------------------------------


def write(out_dir: Path, doc: Document, data: dict[str, Any], *, chart_files: bool = False) -> dict[str, Path]:
    """Write report.json (`data`), report.md and report.html into out_dir, and with `chart_files` every chart
    with a `file` name as a PNG beside them; the paths by kind: each chart's file name, "json", "md", "html"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = {id(c): _png_bytes(c) for c in doc.charts()}
    paths: dict[str, Path] = {}
    files: set[str] = set()
    if chart_files:
        for chart in doc.charts():
            if chart.file:
                paths[chart.file] = out_dir / chart.file
                paths[chart.file].write_bytes(pngs[id(chart)])
                files.add(chart.file)
    paths["json"] = out_dir / "report.json"
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    paths["md"] = out_dir / "report.md"
    paths["md"].write_text(markdown(doc, files), encoding="utf-8")
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(_html(doc, pngs), encoding="utf-8")
    return paths


def fmt(value: Any) -> str:
    """A cell's text: integers with thousands separators, floats to 4 significant digits, the rest as str."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


# ---- Markdown ---------------------------------------------------------------------------------------------------


def md_text(value: Any) -> str:
    """One line, no live HTML (Markdown renders raw tags, so a sample holding "<details>" would swallow the rest
    of the report), no table breaks."""
    return html.escape(" ".join(fmt(value).split()), quote=False).replace("|", "\\|")


def _md_cell(value: Any) -> str:
    if isinstance(value, Cell):
        return md_text(f"{'✓' if value.ok else '✗'} {fmt(value.value)}" if value.mark else value.value)
    return md_text(value)


def _md_block(block: Block, files: set[str]) -> list[str]:
    if isinstance(block, Paragraph):
        return [] if block.only == "html" else [md_text(block.text)]
    if isinstance(block, Table):
        lines = ["| " + " | ".join(md_text(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
        return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
    if isinstance(block, Chart):
        return [f"![{md_text(block.title)}]({block.file})"] if block.file in files else []
    if isinstance(block, Pre):
        fence = "~~~~" if "```" in block.text else "```"
        return [fence, block.text, fence]
    first, *rest = block.fields
    meta = f" ({', '.join(md_text(m) for m in block.meta)})" if block.meta else ""
    lines = [f"- **{md_text(first[0])}**{meta}: {md_text(first[1])}"]
    return lines + [f"  - **{md_text(label)}**: {md_text(text)}" for label, text in rest]


def markdown(doc: Document, chart_files: set[str] | frozenset[str] = frozenset()) -> str:
    """The document as Markdown; a chart shows as a link to its file when that file is in `chart_files`.
    Blocks are separated by a blank line, except that consecutive charts or entries stay together."""
    lines = [f"# {md_text(doc.title)}", ""]
    for section in doc.sections:
        if section.heading is not None:
            lines += [f"{'#' * section.level} {md_text(section.heading)}", ""]
        previous: Block | None = None
        for block in section.blocks:
            rendered = _md_block(block, set(chart_files))
            if not rendered:
                continue
            if type(previous) is type(block) and isinstance(block, Chart | Entry) and lines[-1] == "":
                lines.pop()
            lines += [*rendered, ""]
            previous = block
    return "\n".join(lines)


# ---- HTML -------------------------------------------------------------------------------------------------------

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.ok { background: #eaf7ea; } td.bad { background: #fbeaea; }
p.note { color: #555; margin: .2em 0; }
figure { margin: 1em 0; } img { max-width: 100%; margin: .5em 0 1.5em; } figure img { margin: 0; }
.entry { border-left: 3px solid #4c72b0; padding: .2em .8em; margin: .8em 0; }
.meta { color: #666; font-size: .9em; } pre { white-space: pre-wrap; }
"""


def _td(value: Any) -> str:
    if isinstance(value, Cell):
        return f'<td class="{"ok" if value.ok else "bad"}">{html.escape(fmt(value.value))}</td>'
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="n">{fmt(value)}</td>'
    return f"<td>{html.escape(fmt(value))}</td>"


def _html_block(block: Block, pngs: dict[int, bytes]) -> str:
    e = html.escape
    if isinstance(block, Paragraph):
        if block.only == "md":
            return ""
        return f'<p class="note">{e(block.text)}</p>' if block.note else f"<p>{e(block.text)}</p>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(h)}</th>" for h in block.header)
        body = "".join("\n<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in block.rows)  # a row a line
        return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>{body}\n</tbody>\n</table>"
    if isinstance(block, Chart):
        data = base64.b64encode(pngs[id(block)]).decode("ascii")
        img = f'<img src="data:image/png;base64,{data}" alt="{e(block.title)}">'
        return f"<figure>{img}<figcaption>{e(block.title)}</figcaption></figure>" if block.caption else img
    if isinstance(block, Pre):
        return f"<pre>{e(block.text)}</pre>"
    lines = "".join(f"<p><b>{e(label)}</b> {e(text)}</p>" for label, text in block.fields)
    if block.details:
        summary, text = block.details
        lines += f"<details><summary>{e(summary)}</summary><pre>{e(text)}</pre></details>"
    if block.meta:
        lines += f'<p class="meta">{" · ".join(e(m) for m in block.meta)}</p>'
    return f'<div class="entry">{lines}</div>'


def html_page(doc: Document) -> str:
    """The document as one self-contained HTML page."""
    return _html(doc, {id(c): _png_bytes(c) for c in doc.charts()})


def _html(doc: Document, pngs: dict[int, bytes]) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(doc.title)}</h1>",
    ]
    for section in doc.sections:
        if section.heading is not None:
            parts.append(f"<h{section.level}>{e(section.heading)}</h{section.level}>")
        parts += [p for p in (_html_block(b, pngs) for b in section.blocks) if p]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
