"""Loading a folder of mixed documents: each format's text and sections, and clear skips for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hangjia.core.errors import HangjiaError
from hangjia.corpus.documents import Document, iter_files, load_documents
from tests.paths import KESTREL_DOCS

TXT = """PUMP USER GUIDE
Edition 2024

1. INSTALLATION
---------------

Put the unit on a flat floor.
Leave 5 cm on each side.

2. CLEANING
-----------

Clean the filter every two weeks.
"""
MD = """# Pump Manual

Intro with **bold**, *italic* and a [link text](http://example.com).

## Specs

| Model | Width |
|---|---|
| A-100 | 45 cm |

## Care

Wipe with a `damp` cloth.
"""
HTML = """<html><head><script>var x = "SCRIPT-TEXT";</script><style>.a { color: red }</style></head><body>
<div id="cookie-banner"><p>We use cookies.</p><button>Accept all</button></div>
<header class="site-header"><a href="/">Logo</a><nav><a href="/x">NAV-LINK</a></nav></header>
<main>
  <h1>Recalls</h1>
  <p>Open recall for <strong>model A</strong>.</p>
  <div class="breadcrumb-nav">Home &gt; BREADCRUMB</div>
  <h2>Parts</h2>
  <table><tr><th>Part</th><th>Price</th></tr><tr><td>KP-1</td><td>5 EUR</td></tr></table>
  <ul><li>first item</li><li>second item</li></ul>
</main>
<aside>ASIDE-TEXT</aside>
<footer>FOOTER-TEXT</footer>
</body></html>"""
JSON_DATA = {
    "title": "Service Centres",
    "hotline": {"phone": "0800 111"},
    "centres": [
        {"name": "North", "city": "Ashby", "hours": {"mon": "9-17"}, "services": ["pumps", "valves"], "open": True},
        {"name": "South", "city": "Brill", "hours": {"mon": "closed"}, "services": ["pumps"], "open": False},
    ],
}
JSONL = '{"id": "r1", "text": "first record"}\n\n{"id": "r2", "text": "second record"}\n'
CSV = 'part_number,description,price_eur,notes\nKP-1,Pump,5.00,\nKP-2,"Filter, fine",7.50,Clean often\n'
TSV = "code\tmeaning\nE1\tNo water\n"


def write_folder(root: Path) -> Path:
    files = {
        "guide.txt": TXT.encode(),
        "manual.md": MD.encode(),
        "recalls.html": HTML.encode(),
        "centres.json": json.dumps(JSON_DATA).encode(),
        "sub/records.jsonl": JSONL.encode(),
        "parts.csv": CSV.encode(),
        "codes.tsv": TSV.encode(),
        "binary.txt": b"\x89PNG\x00\x00\x01\x02",
        "latin1.txt": "caf\xe9 cr\xe8me".encode("latin-1"),
        "empty.md": b"  \n\n ",
        "broken.json": b'{\n  "a": 1,\n  "b": \n}',
        "broken.jsonl": b'{"id": 1}\n{"id": 2\n',
        "tool.exe": b"MZ\x90\x00",
        ".hidden.md": b"# Secret",
        ".git/config": b"[core]",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture()
def loaded(tmp_path):
    seen: list[str] = []
    docs, skipped = load_documents(write_folder(tmp_path), on_file=seen.append)
    return {d.source: d for d in docs}, {s.path: s.reason for s in skipped}, seen


def section_text(doc: Document, title: str) -> str:
    section = next(s for s in doc.sections if s.title == title)
    return doc.text[section.start : section.end]


def test_iter_files_is_sorted_recursive_and_skips_hidden(tmp_path):
    names = [p.relative_to(tmp_path).as_posix() for p in iter_files(write_folder(tmp_path))]
    assert names == sorted(names)
    assert "sub/records.jsonl" in names
    assert not any(part.startswith(".") for n in names for part in n.split("/"))


def test_good_files_load_and_bad_files_are_skipped_with_a_reason(loaded):
    docs, skipped, seen = loaded
    assert set(docs) == {
        "guide.txt",
        "manual.md",
        "recalls.html",
        "centres.json",
        "sub/records.jsonl",
        "parts.csv",
        "codes.tsv",
        "latin1.txt",
    }
    assert skipped["binary.txt"].startswith("binary file")
    assert docs["latin1.txt"].text == "café crème"  # encodings are detected, not assumed
    assert skipped["empty.md"] == "empty file"
    assert skipped["broken.json"].startswith("invalid JSON at line 4")
    assert skipped["broken.jsonl"].startswith("invalid JSON at line 2")
    assert skipped["tool.exe"] == "unsupported file type .exe"
    assert len(seen) == len(docs) + len(skipped)  # on_file once per file, hidden ones excluded


def test_txt_sections_come_from_underlined_and_caps_headings(loaded):
    doc = loaded[0]["guide.txt"]
    assert doc.format == "txt"
    assert [s.title for s in doc.sections] == ["PUMP USER GUIDE", "1. INSTALLATION", "2. CLEANING"]
    assert "Leave 5 cm on each side." in section_text(doc, "1. INSTALLATION")
    assert "---" not in doc.text  # underlines are decoration


def test_md_headings_tables_and_inline_markup(loaded):
    doc = loaded[0]["manual.md"]
    assert [s.title for s in doc.sections] == ["Pump Manual", "Specs", "Care"]
    assert "Intro with bold, italic and a link text." in doc.text
    assert "Model | Width\nA-100 | 45 cm" in section_text(doc, "Specs")
    assert "|---" not in doc.text and "damp cloth" in doc.text


def test_html_drops_boilerplate_and_keeps_main_content(loaded):
    doc = loaded[0]["recalls.html"]
    noise_words = (
        "SCRIPT-TEXT",
        "cookies",
        "Accept all",
        "NAV-LINK",
        "BREADCRUMB",
        "ASIDE-TEXT",
        "FOOTER-TEXT",
        "Logo",
        "color",
    )
    for noise in noise_words:
        assert noise not in doc.text
    assert [s.title for s in doc.sections] == ["Recalls", "Parts"]
    assert "Open recall for model A." in section_text(doc, "Recalls")
    parts = section_text(doc, "Parts")
    assert "Part | Price\nKP-1 | 5 EUR" in parts
    assert "first item\nsecond item" in parts


def test_json_renders_records_as_key_value_lines(loaded):
    doc = loaded[0]["centres.json"]
    assert [s.title for s in doc.sections] == ["Service Centres", "North", "South"]
    assert "hotline.phone: 0800 111" in section_text(doc, "Service Centres")
    north = section_text(doc, "North")
    assert "hours.mon: 9-17" in north and "services: pumps, valves" in north and "open: yes" in north
    assert "\n\nname: South" in doc.text  # records separated by a blank line


def test_jsonl_records_are_labelled_by_id(loaded):
    doc = loaded[0]["sub/records.jsonl"]
    assert doc.format == "jsonl"
    assert [s.title for s in doc.sections] == ["r1", "r2"]
    assert section_text(doc, "r2") == "id: r2\ntext: second record"


def test_csv_and_tsv_rows_become_one_line_sections(loaded):
    doc = loaded[0]["parts.csv"]
    assert [s.title for s in doc.sections] == ["KP-1", "KP-2"]
    assert section_text(doc, "KP-1") == "part_number: KP-1; description: Pump; price_eur: 5.00"
    assert section_text(doc, "KP-2").endswith("Filter, fine; price_eur: 7.50; notes: Clean often")
    tsv = loaded[0]["codes.tsv"]
    assert tsv.format == "csv" and section_text(tsv, "E1") == "code: E1; meaning: No water"


def test_sections_point_into_text_and_document_round_trips(loaded):
    for doc in loaded[0].values():
        assert len(doc.sha256) == 64
        assert "\n\n\n" not in doc.text and not any(line != line.rstrip() for line in doc.text.split("\n"))
        for s in doc.sections:
            assert 0 <= s.start < s.end <= len(doc.text)
            assert doc.text[s.start : s.end].strip()
        assert Document.from_dict(json.loads(json.dumps(doc.to_dict()))) == doc


def test_missing_folder_raises(tmp_path):
    with pytest.raises(HangjiaError, match="does not exist; pass --docs"):
        load_documents(tmp_path / "nope")


def test_empty_folder_raises(tmp_path):
    (tmp_path / ".hidden").write_text("x")
    with pytest.raises(HangjiaError, match="has no files"):
        load_documents(tmp_path)


def test_folder_where_nothing_loads_raises(tmp_path):
    (tmp_path / "a.exe").write_bytes(b"MZ")
    (tmp_path / "b.md").write_text("")
    with pytest.raises(HangjiaError, match=r"None of the 2 files .*\(2 skipped"):
        load_documents(tmp_path)


def test_kestrel_docs_all_load():
    docs, skipped = load_documents(KESTREL_DOCS)
    assert skipped == []
    assert len(docs) == 12
    assert {d.format for d in docs} == {"md", "txt", "html", "json", "csv"}


def test_kestrel_recall_page_has_no_banner_or_navigation():
    doc = {d.source: d for d in load_documents(KESTREL_DOCS)[0]}["recall_notices.html"]
    for noise in (
        "cookies",
        "Cookie settings",
        "Retailer login",
        "Spare parts shop",
        "Imprint",
        "Sitemap",
        "Search kestrel-home",
        "dataLayer",
    ):
        assert noise not in doc.text
    assert "KR-2024-02" in doc.text and "KP-9002B" in doc.text
    assert "KR-2022-01 | DW-3100 Compact 45" in doc.text  # the closed-recalls table row


def test_kestrel_service_centres_have_one_section_per_centre():
    doc = {d.source: d for d in load_documents(KESTREL_DOCS)[0]}["service_centres.json"]
    centres = json.loads((KESTREL_DOCS / "service_centres.json").read_text())["service_centres"]
    titles = [s.title for s in doc.sections]
    assert titles[1:] == [c["name"] for c in centres]
    assert "Tomas Ferreday" in section_text(doc, "Kestrel Service Centre Brennvik Harbour")


def test_kestrel_txt_page_headers_are_dropped_after_the_first():
    doc = {d.source: d for d in load_documents(KESTREL_DOCS)[0]}["heat_pump_installation_guide.txt"]
    assert doc.text.count("INSTALLATION GUIDE") == 1
    assert "Page 3 of 5" not in doc.text
    assert "3.3 Pressure" in [s.title for s in doc.sections]
