"""The one report renderer: the data passed through to report.json, escaped Markdown and HTML, verdict cells,
charts embedded in the HTML and written (and linked) beside the Markdown only when asked."""

from __future__ import annotations

import base64
import json
import re

from hangjia.core import reports
from hangjia.core.reports import Cell, Chart, Document, Entry, Paragraph, Pre, Section, Table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chart_png() -> bytes:
    fig = reports.figure(3, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    return reports.png(fig)


def make_doc(png: bytes) -> Document:
    return Document(
        "Report <1>",
        [
            Section(None, [Paragraph("Markdown only", only="md"), Paragraph("HTML only", note=True, only="html")]),
            Section(
                "Numbers | more",
                [Table(["name", "n", "verdict"], [["a|b <i>", 12345, Cell("yes", True)], ["c", 0.5, Cell("", False)]])],
            ),
            Section("Charts", [Chart("first", png, "first.png", caption=False), Chart("second", png, "second.png")]),
            Section("Samples"),
            Section(
                "gen",
                [
                    Entry([("Q", "q1?"), ("A", "a < 1")], meta=["k", "s"], details=("turn", "x <y>")),
                    Entry([("Q", "q2")]),
                ],
                3,
            ),
            Section("Code", [Pre("print(1)\n  indented")]),
        ],
    )


def test_markdown_html_json_and_chart_files(tmp_path):
    png = chart_png()
    assert png.startswith(PNG_SIGNATURE)
    data = {"title": "Report <1>", "n": [1, 2], "中文": "保持"}
    paths = reports.write(tmp_path, make_doc(png), data, chart_files=True)
    assert list(paths) == ["first.png", "second.png", "json", "md", "html"]
    assert paths["first.png"].read_bytes() == png
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == data
    assert "保持" in paths["json"].read_text(encoding="utf-8")

    md = paths["md"].read_text(encoding="utf-8")
    assert md.startswith("# Report &lt;1&gt;\n\nMarkdown only\n\n## Numbers \\| more\n\n")
    assert "HTML only" not in md
    assert "| a\\|b &lt;i&gt; | 12,345 | ✓ yes |" in md and "| c | 0.5 | ✗ |" in md
    assert "## Charts\n\n![first](first.png)\n![second](second.png)\n\n## Samples\n\n### gen\n\n" in md
    assert "- **Q** (k, s): q1?\n  - **A**: a &lt; 1\n- **Q**: q2\n\n" in md
    assert "```\nprint(1)\n  indented\n```\n" in md and md.endswith("\n")

    page = paths["html"].read_text(encoding="utf-8")
    assert "<title>Report &lt;1&gt;</title>" in page and "Markdown only" not in page
    assert '<p class="note">HTML only</p>' in page
    assert '<tr><td>a|b &lt;i&gt;</td><td class="n">12,345</td><td class="ok">yes</td></tr>' in page
    assert '<td class="bad"></td>' in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="(\w+)">', page)
    assert [(base64.b64decode(d), alt) for d, alt in images] == [(png, "first"), (png, "second")]
    assert "<figcaption>second</figcaption>" in page and "<figcaption>first</figcaption>" not in page
    assert "<details><summary>turn</summary><pre>x &lt;y&gt;</pre></details>" in page
    assert '<p class="meta">k · s</p>' in page and "<h3>gen</h3>" in page


def test_without_chart_files_charts_are_in_the_html_only(tmp_path):
    fig = reports.figure(3, 2)
    fig.add_subplot().bar(["a"], [1])
    doc = Document("t", [Section(None, [Chart("bars", fig, "bars.png")])])
    paths = reports.write(tmp_path, doc, {})
    assert list(paths) == ["json", "md", "html"] and not (tmp_path / "bars.png").exists()
    assert paths["md"].read_text(encoding="utf-8") == "# t\n"
    (data,) = re.findall(r'base64,([A-Za-z0-9+/=]+)"', paths["html"].read_text(encoding="utf-8"))
    assert base64.b64decode(data).startswith(PNG_SIGNATURE)  # a Figure is saved as PNG by the renderer


def test_fmt():
    assert [reports.fmt(v) for v in (True, 1500, 0.123456, 12.5, "x", None)] == [
        "True",
        "1,500",
        "0.1235",
        "12.5",
        "x",
        "None",
    ]
