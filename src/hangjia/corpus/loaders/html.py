"""HTML loader: h1-h4 start sections; scripts, navigation, banners and footers are dropped; tables become rows."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, NavigableString, Tag

from hangjia.corpus.text import Block, Section, assemble, decode, one_line

_DROP_TAGS = ["script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template", "svg"]
_DROP_MARKERS = ("cookie", "banner", "nav", "footer")
_HEADINGS = {"h1", "h2", "h3", "h4"}
_PARAGRAPH_TAGS = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "ul",
    "ol",
    "dl",
    "blockquote",
    "pre",
    "table",
    "h5",
    "h6",
    "figure",
    "address",
    "details",
    "body",
}
_LINE_TAGS = {"li", "tr", "br", "dt", "dd", "summary", "figcaption"}


def _is_boilerplate(tag: Tag) -> bool:
    if tag.name in ("html", "body", "main"):
        return False  # a body class like "has-navbar" must not drop the whole page
    marks = " ".join([tag.get("id") or "", *(tag.get("class") or [])]).lower()
    # Whole-word-ish match: "main-nav", "navbar", "cookie-banner" yes; "unavailable", "canvas" no.
    words = re.split(r"[\s_-]+", marks)
    return any(w.startswith(m) or w.endswith(m) for w in words if w for m in _DROP_MARKERS)


class _HtmlText:
    """Walks the DOM and collects (title, text) blocks; headings h1-h4 start a new block."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.title, self.lines, self.inline = "", [], []

    def flush(self, blank: bool = False) -> None:
        text = one_line("".join(self.inline))
        if text:
            self.lines.append(text)
        self.inline = []
        if blank and self.lines and self.lines[-1]:
            self.lines.append("")  # paragraph break

    def walk(self, node: Tag) -> None:
        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # skip comments, doctype, CDATA
                    self.inline.append(str(child))
            elif child.name in _HEADINGS:
                self.flush()
                self.blocks.append((self.title, "\n".join(self.lines)))
                self.title = one_line(child.get_text(" "))
                self.lines = [self.title, ""]
            elif child.name == "table":
                self.flush(blank=True)
                for row in child.find_all("tr"):
                    cells = [one_line(c.get_text(" ")) for c in row.find_all(["th", "td"])]
                    self.lines.append(" | ".join(cells))
                self.flush(blank=True)
            elif child.name in _PARAGRAPH_TAGS or child.name in _LINE_TAGS:
                self.flush(blank=child.name in _PARAGRAPH_TAGS)
                self.walk(child)
                self.flush(blank=child.name in _PARAGRAPH_TAGS)
            else:
                self.walk(child)  # inline element: keep its text in the current line


def load_html(raw: bytes, relpath: str) -> tuple[str, list[Section]]:
    soup = BeautifulSoup(decode(raw), "html.parser")
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(_is_boilerplate):
        if not tag.decomposed:
            tag.decompose()
    roots = soup.find_all("main") or soup.find_all("article") or [soup.body or soup]
    walker = _HtmlText()
    for root in roots:
        walker.walk(root)
        walker.flush(blank=True)
    walker.blocks.append((walker.title, "\n".join(walker.lines)))
    return assemble(walker.blocks)
