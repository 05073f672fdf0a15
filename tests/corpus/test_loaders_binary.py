"""Binary formats (pdf, docx, xlsx, parquet), zip archives, encoding detection and the file size limit.

The files in fixtures/ are real files made by fixtures/make_fixtures.py.
"""

from __future__ import annotations

import io
import random
import shutil
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pypdf import PdfReader, PdfWriter

from hangjia.corpus.documents import MAX_FILE_BYTES, Document, load_documents
from hangjia.corpus.loaders import LOADERS
from hangjia.corpus.loaders.docx import load_docx
from hangjia.corpus.loaders.parquet import load_parquet
from hangjia.corpus.loaders.pdf import load_pdf
from hangjia.corpus.loaders.txt import load_txt
from hangjia.corpus.loaders.xlsx import load_xlsx
from hangjia.corpus.text import decode
from tests.paths import CORPUS_FIXTURES


def fixture(name: str) -> bytes:
    return (CORPUS_FIXTURES / name).read_bytes()


def sections(text: str, secs) -> dict[str, str]:
    return {s.title: text[s.start : s.end] for s in secs}


# ---------------------------------------------------------------- pdf


def test_pdf_pages_are_sections_named_by_page_number():
    text, secs = load_pdf(fixture("manual.pdf"), "manual.pdf")
    pages = sections(text, secs)
    assert list(pages) == ["page 1", "page 2", "page 3", "page 4"]
    assert pages["page 1"].startswith("Kestrel KH-200 Installation Guide\nRead this guide")
    assert pages["page 2"] == (
        "1. Choosing a place\n"
        "Put the outdoor unit on a flat concrete base. Leave 30 cm free on each side and 1 m in front of the fan."
    )
    assert "Tighten the unions to 25 Nm." in pages["page 3"]
    assert "hold the MODE key for 5 seconds" in pages["page 4"]


def test_pdf_chunks_carry_their_page_and_other_formats_none():
    from hangjia.corpus.chunk import Chunk, chunk_documents

    text, secs = load_pdf(fixture("manual.pdf"), "manual.pdf")
    chunks = chunk_documents([Document("docs/manual.pdf", "pdf", text, secs, "0" * 64)])
    assert {c.page for c in chunks} == {1, 2, 3, 4}
    assert all(c.section == f"page {c.page}" for c in chunks)
    assert Chunk("x", "notes.md", "page 2", 0, 1, "x").page is None  # a heading, not a PDF page
    assert Chunk("x", "manual.PDF", "Installation", 0, 1, "x").page is None


def test_pdf_running_header_and_page_number_footer_are_dropped():
    text, _ = load_pdf(fixture("manual.pdf"), "manual.pdf")
    assert "Kestrel Heat Pumps - KH-200 Installation Guide" not in text  # header on every page
    assert "Page" not in text  # "Page N of 4" footer
    assert "Kestrel KH-200 Installation Guide" in text  # the title on page 1 alone stays


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("encrypted.pdf", "encrypted PDF (password protected)"),
        ("corrupt.pdf", "corrupt PDF: "),
        ("scanned.pdf", "no extractable text (scanned PDF? OCR is not supported)"),
    ],
)
def test_bad_pdfs_raise_a_readable_reason(name, reason):
    with pytest.raises(ValueError) as err:
        load_pdf(fixture(name), name)
    assert str(err.value).startswith(reason)


def test_pdf_with_only_an_owner_password_is_read():
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(fixture("manual.pdf"))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")  # restricts editing, not reading
    buf = io.BytesIO()
    writer.write(buf)
    text, secs = load_pdf(buf.getvalue(), "locked.pdf")
    assert len(secs) == 4
    assert "Connect the flow pipe to port A" in text


# ---------------------------------------------------------------- docx


def test_docx_headings_start_sections_and_tables_stay_in_document_order():
    text, secs = load_docx(fixture("manual.docx"), "manual.docx")
    parts = sections(text, secs)
    assert list(parts) == ["Kestrel Dishwasher DW-45 Manual", "Programmes", "Error codes"]
    assert parts["Kestrel Dishwasher DW-45 Manual"].endswith("covers the DW-45 and DW-45X built-in dishwashers.")
    assert parts["Programmes"] == (
        "Programmes\n\n"
        "Choose a programme with the P key. The table lists the programmes.\n\n"
        "Programme | Temperature | Duration\n"
        "Eco | 45 C | 3 h 40 min\n"
        "Intensive | 70 C | 2 h 10 min\n"
        "Quick | 40 C | 30 min\n\n"
        "Eco uses the least water and energy."
    )
    assert parts["Error codes"].endswith("Code | Meaning\nE15 | Water in the base tray")


def test_corrupt_docx_raises():
    with pytest.raises(ValueError, match="^corrupt Word document: "):
        load_docx(fixture("manual.docx")[:4000], "cut.docx")


# ---------------------------------------------------------------- xlsx, parquet


def test_xlsx_sheets_are_sections_and_rows_are_column_value_lines():
    text, secs = load_xlsx(fixture("parts.xlsx"), "parts.xlsx")
    sheets = sections(text, secs)
    assert list(sheets) == ["Parts", "Error codes"]
    assert sheets["Parts"].split("\n") == [
        "part_number: KP-1; description: Drain pump; price_eur: 39.5; in_stock: yes",
        "part_number: KP-2; description: Door seal; price_eur: 12; in_stock: no",
        "part_number: KP-3; description: Filter, fine; price_eur: 7.25; in_stock: yes",  # the empty row is gone
    ]
    assert sheets["Error codes"].split("\n")[1] == "code: E24; meaning: Drain blocked; action: Clean the filter"


def test_corrupt_xlsx_raises():
    with pytest.raises(ValueError, match="^corrupt Excel workbook: "):
        load_xlsx(b"PK\x03\x04 not really a workbook", "bad.xlsx")


def test_parquet_text_column_rows_are_records_with_their_other_columns():
    text, secs = load_parquet(fixture("faq.parquet"), "faq.parquet")
    rows = sections(text, secs)
    assert list(rows) == ["Descaling", "Noisy pump", "Child lock"]  # labelled by the title column
    assert rows["Noisy pump"] == (
        "A humming drain pump usually means the filter is blocked.\n"
        "id: faq-2\ntitle: Noisy pump\nproduct: DW-45\nviews: 87\ntags: noise, pump"
    )
    assert "text:" not in text


def test_parquet_without_a_text_column_renders_rows_like_csv_across_batches():
    n = 2500  # more than one 1,024-row batch
    table = pa.table({"code": [f"E{i}" for i in range(n)], "meaning": ["No water"] * n, "count": list(range(n))})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=1000)
    text, secs = load_parquet(buf.getvalue(), "codes.parquet")
    assert len(secs) == n
    assert [s.title for s in secs[1023:1026]] == ["E1023", "E1024", "E1025"]
    assert text[secs[-1].start : secs[-1].end] == "code: E2499; meaning: No water; count: 2499"


def test_corrupt_parquet_raises():
    with pytest.raises(ValueError, match="^corrupt Parquet file: "):
        load_parquet(fixture("faq.parquet")[:200], "cut.parquet")


# ---------------------------------------------------------------- encodings


def test_gbk_chinese_text_is_detected_and_sectioned():
    raw = fixture("manual_gbk.txt")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = decode(raw)
    assert text.startswith("洗衣机使用说明书\n\n安装说明\n")
    assert "请务必拆除机身背面的四颗运输螺栓" in text
    assert "错误代码 E21" in text
    _, secs = load_txt(raw, "manual_gbk.txt")
    assert {"安装说明", "日常保养"} <= {s.title for s in secs}
    assert not any(s.title.startswith("请") or s.title.startswith("每次") for s in secs)  # paragraphs are not headings


def test_utf16_with_a_bom_is_decoded():
    text = decode(fixture("quickstart_utf16.txt"))
    assert text.startswith("Dishwasher quick start\n")
    assert "the tank holds 110 ml" in text


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_recognised_by_its_nul_bytes(encoding):
    for sample in [
        "Descale every 4 weeks.\nUse citric acid.\n",
        "第一章 安装\n\n请拆除运输螺栓 (4 pcs)。\nModel KX-200\n",
    ]:
        assert decode(sample.encode(encoding)) == sample


@pytest.mark.parametrize(
    ("sample", "encoding"),
    [
        ("Caf\xe9 cr\xe8me: don\u2019t use \u201cbleach\u201d on the door seal \u2013 it cracks.", "cp1252"),
        ("Gr\xf6\xdfe: 45 cm, Gewicht 12 kg. F\xfcr die K\xfcche geeignet.", "latin-1"),
        ("第一章 安装说明\n请将洗衣机放置在平整的地面上，四周至少留出五厘米的空间。", "gb18030"),
        ("第一章 安裝說明\n請將洗衣機放置在平整的地面上，四周至少留出五釐米的空間。", "big5"),
        ("UTF-8 with a BOM: 你好, caf\xe9", "utf-8-sig"),
    ],
)
def test_encodings_are_detected(sample, encoding):
    assert decode(sample.encode(encoding)) == sample


def test_utf8_with_a_stray_byte_stays_utf8():
    good = "电源线必须接地。Ensure the plug is earthed – “always”. "
    assert decode(good.encode() + b"\x92 " + good.encode()) == f"{good}\ufffd {good}"


@pytest.mark.parametrize(
    "raw",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
        random.Random(0).randbytes(4096),
        random.Random(1).randbytes(600).replace(b"\x00", b""),  # no NUL: rejected for its control bytes
    ],
)
def test_binary_bytes_are_rejected(raw):
    with pytest.raises(ValueError, match="^binary file"):
        decode(raw)


# ---------------------------------------------------------------- folders and zip archives


def by_path(items) -> dict:
    return {(i.source if isinstance(i, Document) else i.path): i for i in items}


def test_a_folder_loads_its_good_files_and_skips_bad_ones_with_reasons(tmp_path):
    for path in CORPUS_FIXTURES.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path)
    (tmp_path / "photo.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    docs, skipped = load_documents(tmp_path)
    docs, reasons = by_path(docs), {s.path: s.reason for s in skipped}
    assert set(docs) == {
        "manual.pdf",
        "manual.docx",
        "parts.xlsx",
        "faq.parquet",
        "manual_gbk.txt",
        "quickstart_utf16.txt",
        "bundle.zip/bundle/guide.md",
        "bundle.zip/bundle/data/parts.csv",
    }
    assert {d.format for d in docs.values()} == {"pdf", "docx", "xlsx", "parquet", "txt", "md", "csv"}
    assert reasons == {
        "encrypted.pdf": "encrypted PDF (password protected)",
        "corrupt.pdf": reasons["corrupt.pdf"],
        "scanned.pdf": "no extractable text (scanned PDF? OCR is not supported)",
        "photo.txt": "binary file (contains NUL bytes)",
        "make_fixtures.py": "unsupported file type .py",
        "bundle.zip/bundle/images/diagram.png": "unsupported file type .png",
    }
    assert reasons["corrupt.pdf"].startswith("corrupt PDF: ")


def test_zip_members_are_documents_named_inside_the_archive(tmp_path):
    shutil.copy(CORPUS_FIXTURES / "bundle.zip", tmp_path / "kettle.zip")
    seen: list[str] = []
    docs, skipped = load_documents(tmp_path, on_file=seen.append)
    docs = by_path(docs)
    assert seen == ["kettle.zip"]
    assert list(docs) == ["kettle.zip/bundle/data/parts.csv", "kettle.zip/bundle/guide.md"]
    guide = docs["kettle.zip/bundle/guide.md"]
    assert guide.format == "md"
    assert guide.text == "Kettle KT-10\n\nFill to the MAX line and press the switch."
    assert docs["kettle.zip/bundle/data/parts.csv"].sections[0].title == "KT-F1"
    assert skipped[0].path == "kettle.zip/bundle/images/diagram.png"


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_bombs_nested_archives_and_bad_members_are_skipped(tmp_path):
    inner = write_zip(tmp_path / "inner.zip", {"a.md": b"# A"}).read_bytes()
    (tmp_path / "inner.zip").unlink()
    write_zip(
        tmp_path / "pack.zip",
        {
            "ok.md": b"# Fine\n\nSmall file.",
            "bomb.txt": b"a" * (2 * 2**20),  # 2 MB of one letter packs into about 2 KB
            "more.zip": inner,
            "broken.json": b'{"a": ',
            ".hidden.md": b"# Hidden",
            "__MACOSX/._ok.md": b"\x00\x05\x16\x07",
        },
    )
    assert (tmp_path / "pack.zip").stat().st_size < 2**20
    docs, skipped = load_documents(tmp_path, max_file_bytes=2**20)
    assert list(by_path(docs)) == ["pack.zip/ok.md"]
    assert {s.path: s.reason for s in skipped} == {
        "pack.zip/bomb.txt": "larger than 1 MB",
        "pack.zip/broken.json": "invalid JSON at line 1: Expecting value",
        "pack.zip/more.zip": "archive inside an archive; extract it first",
    }


def test_zip_member_names_in_gbk_are_read_as_chinese(tmp_path):
    # Windows' built-in zipper in China writes GBK names without the UTF-8 flag; zipfile cannot, so patch them in.
    name = "说明.md".encode("gbk")
    placeholder = b"x" * (len(name) - 3) + b".md"
    write_zip(tmp_path / "cn.zip", {placeholder.decode(): "# 说明\n\n先拆除运输螺栓。".encode()})
    (tmp_path / "cn.zip").write_bytes((tmp_path / "cn.zip").read_bytes().replace(placeholder, name))
    docs, _ = load_documents(tmp_path)
    assert [d.source for d in docs] == ["cn.zip/说明.md"]
    assert docs[0].sections[0].title == "说明"


def test_corrupt_and_empty_zips_are_skipped(tmp_path):
    (tmp_path / "cut.zip").write_bytes(fixture("bundle.zip")[:100])
    write_zip(tmp_path / "empty.zip", {".DS_Store": b"\x00"})
    (tmp_path / "ok.md").write_text("# Ok")
    docs, skipped = load_documents(tmp_path)
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["cut.zip"].startswith("corrupt zip archive")
    assert reasons["empty.zip"] == "zip archive holds no files to load"


def test_files_over_the_size_limit_are_skipped_before_reading(tmp_path):
    assert MAX_FILE_BYTES == 50 * 2**20
    (tmp_path / "big.txt").write_text("word " * (2**20 // 5 + 1))
    (tmp_path / "small.md").write_text("# Small")
    docs, skipped = load_documents(tmp_path, max_file_bytes=2**20)
    assert [d.source for d in docs] == ["small.md"]
    assert [(s.path, s.reason) for s in skipped] == [("big.txt", "larger than 1 MB")]
    docs, skipped = load_documents(tmp_path)  # under the 50 MB default
    assert len(docs) == 2 and not skipped


def test_new_formats_are_registered():
    assert {".pdf", ".docx", ".xlsx", ".parquet"} <= set(LOADERS)
