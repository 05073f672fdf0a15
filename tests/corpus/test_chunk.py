"""Chunking: stable ids, spans that point into the document, section boundaries and size limits respected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hangjia.corpus.chunk import Chunk, chunk_documents, count_units
from hangjia.corpus.documents import LOADERS, Document, load_documents
from tests.paths import KESTREL_DOCS


def make_doc(source: str, text: str) -> Document:
    body, sections = LOADERS[Path(source).suffix](text.encode(), source)
    return Document(source, Path(source).suffix.lstrip("."), body, sections, "0" * 64)


@pytest.fixture(scope="module")
def kestrel() -> list[Document]:
    return load_documents(KESTREL_DOCS)[0]


def section_of(doc: Document, chunk: Chunk):
    return next(s for s in doc.sections if s.start <= chunk.start and chunk.end <= s.end)


def test_ids_are_stable_and_unique(kestrel):
    first, second = chunk_documents(kestrel), chunk_documents(kestrel)
    assert [c.id for c in first] == [c.id for c in second]
    assert len({c.id for c in first}) == len(first)
    assert all(len(c.id) == 16 for c in first)


@pytest.mark.parametrize("max_tokens,overlap", [(120, 20), (40, 8), (15, 0)])
def test_spans_stay_inside_one_section_and_respect_max_tokens(kestrel, max_tokens, overlap):
    docs = {d.source: d for d in kestrel}
    chunks = chunk_documents(kestrel, max_tokens=max_tokens, overlap_tokens=overlap)
    for chunk in chunks:
        doc = docs[chunk.source]
        raw = doc.text[chunk.start : chunk.end]
        section = section_of(doc, chunk)  # raises StopIteration if the chunk crosses a section boundary
        assert chunk.section == section.title
        assert raw.strip() and raw == raw.rstrip()
        assert chunk.text.endswith(raw)
        assert count_units(raw) <= max_tokens  # no tokenizer given: sizes are units (words, here)


def test_every_section_word_is_covered(kestrel):
    chunks = chunk_documents(kestrel)
    for doc in kestrel:
        covered = [False] * len(doc.text)
        for c in (c for c in chunks if c.source == doc.source):
            covered[c.start : c.end] = [True] * (c.end - c.start)
        for s in doc.sections:
            lines = doc.text[s.start : s.end].split("\n")
            if len(lines) == 1 and lines[0].strip() == s.title:
                continue  # a heading with nothing under it is not chunked
            span = zip(doc.text[s.start : s.end], covered[s.start : s.end], strict=True)
            missing = "".join(ch for ch, ok in span if not ok)
            missing = " ".join(missing.split()).replace(" ".join(s.title.split()), "", 1)  # title is a prefix
            assert not missing.strip(), (doc.source, s.title, missing[:80])


def test_chunk_text_carries_section_title_and_table_header():
    doc = make_doc(
        "codes.md", "# Codes\n\n" + "Code | Meaning\n" + "".join(f"E{i} | Fault number {i}\n" for i in range(10, 40))
    )
    chunks = chunk_documents([doc], max_tokens=40, overlap_tokens=0)
    assert len(chunks) > 1
    assert chunks[0].text.startswith("Codes\n")
    for chunk in chunks[1:]:
        assert chunk.text.startswith("Codes\nCode | Meaning\nE")  # later table chunks repeat the header row


def test_long_paragraph_splits_on_sentences_with_overlap():
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(30)]
    doc = make_doc("long.txt", " ".join(sentences))
    chunks = chunk_documents([doc], max_tokens=50, overlap_tokens=10)
    raws = [doc.text[c.start : c.end] for c in chunks]
    assert all(r.endswith(".") for r in raws[:-1])  # cut at a sentence end
    assert all(len(r.split()) <= 50 for r in raws)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # consecutive windows overlap


def test_csv_rows_are_one_chunk_each():
    doc = make_doc("parts.csv", "part,description\nKP-1,Pump\nKP-2,Valve\nKP-3,Hose\n")
    chunks = chunk_documents([doc])
    assert [c.section for c in chunks] == ["KP-1", "KP-2", "KP-3"]
    assert chunks[1].text == "KP-2\npart: KP-2; description: Valve"


def test_round_trip_and_bad_arguments(kestrel):
    chunk = chunk_documents(kestrel)[0]
    assert Chunk.from_dict(chunk.to_dict()) == chunk
    with pytest.raises(ValueError):
        chunk_documents(kestrel, max_tokens=10, overlap_tokens=10)


def test_old_word_keywords_are_aliases(kestrel):
    expected = [c.id for c in chunk_documents(kestrel, max_tokens=40, overlap_tokens=8)]
    assert [c.id for c in chunk_documents(kestrel, max_words=40, overlap_words=8)] == expected
    assert [c.id for c in chunk_documents(kestrel, 40, 8)] == expected  # the pipeline's positional call


# A dishwasher manual in Chinese: no spaces, every sentence under 30 characters, paragraphs of 90-150 characters.
ZH_MANUAL = """# 安装与使用说明

安装前请仔细阅读本说明书，并妥善保管以备日后查阅。本机仅适用于家庭室内使用，不得安装在室外。\
搬运时请保持机器直立，倾斜角度不得超过四十五度。拆除包装后，请检查机身是否有运输损坏；\
如有损坏，请勿通电，并立即联系经销商。

本机必须使用带有可靠接地的单相插座，额定电压为二百二十伏。请勿使用延长线或多孔插座，以免插头过热！\
电源线如有破损，必须由制造商或其售后部门更换。进水管应连接到冷水龙头，水压应在零点零四至一兆帕之间。\
排水管的最高点距地面不得超过一米，且不得被挤压或弯折。

首次使用前，请向软水器中加入专用软水盐，直至盐水溢出。每次洗涤前，请先清除餐具上的食物残渣。\
碗碟应开口朝下放置，刀叉等尖锐餐具应尖端朝下插入餐具篮。选择标准程序可满足日常清洗需要；\
对于重油污的锅具，请选择强力程序。洗涤结束后，请等待十分钟再开门，以免被蒸汽烫伤。

如果显示屏出现错误代码，请先关闭电源，等待一分钟后重新启动。若故障仍然存在，请检查过滤器是否堵塞。\
您能自行排除故障吗？如不能，请拨打客服热线，并提供机器型号和序列号。
"""

MIXED_MANUAL = """# Wi-Fi连接

将DW4500洗碗机连接到家庭Wi-Fi网络：打开Kestrel Home应用，点击Add device。按住机器上的WiFi键三秒，\
直到指示灯闪烁。输入网络的SSID和password后，应用会显示firmware version 2.3.1。如果连接失败，\
请确认路由器使用2.4 GHz频段，并关闭MAC address过滤。仍无法连接时，请联系support@kestrel.example。
"""

SENTENCE_ENDS = "。！？；"


def zh_sentences(text: str) -> list[str]:
    return [s for s in re.split(f"(?<=[{SENTENCE_ENDS}])", text.split("\n", 1)[1]) if s.strip()]


def test_units_count_each_cjk_character_and_each_other_word():
    assert count_units("将DW4500洗碗机连接到Wi-Fi网络。") == 12  # 将 DW4500 洗碗机 连接到 Wi-Fi 网络 。
    assert count_units("ひらがな カタカナ 한국어，ok… done.") == 14
    assert count_units("安装\u3000说明") == 4  # the ideographic space separates, it is not a unit


def test_chinese_document_splits_at_sentence_ends_within_the_bound():
    assert max(count_units(s) for s in zh_sentences(ZH_MANUAL)) <= 30  # every 30-unit stretch has a 。！？；
    doc = make_doc("zh.md", ZH_MANUAL)
    chunks = chunk_documents([doc], max_tokens=60, overlap_tokens=10)
    assert len(chunks) >= 8
    for chunk in chunks:
        raw = doc.text[chunk.start : chunk.end]
        assert count_units(raw) <= 60
        assert raw[-1] in SENTENCE_ENDS  # cut after a sentence end, never inside a sentence
        assert chunk.text in (raw, "安装与使用说明\n" + raw)
    assert chunks[0].text.startswith("安装与使用说明\n")
    covered = [False] * len(doc.text)
    for c in chunks:
        covered[c.start : c.end] = [True] * (c.end - c.start)
    body = doc.text.index("安装前")  # the heading line is carried as the title prefix
    assert all(ok or ch.isspace() for ch, ok in zip(doc.text[body:], covered[body:], strict=True))
    paragraph_two = [c for c in chunks if "电源线" in doc.text[c.start : c.end] or "单相" in doc.text[c.start : c.end]]
    assert len(paragraph_two) >= 2
    assert all(b.start < a.end for a, b in zip(paragraph_two, paragraph_two[1:], strict=False))  # windows overlap


def test_mixed_chinese_and_english_never_cuts_an_english_word():
    doc = make_doc("wifi.md", MIXED_MANUAL)
    words = set(re.findall(r"[A-Za-z0-9@.\-]+", doc.text))
    chunks = chunk_documents([doc], max_tokens=30, overlap_tokens=6)
    assert len(chunks) >= 4
    for chunk in chunks:
        raw = doc.text[chunk.start : chunk.end]
        assert count_units(raw) <= 30
        assert set(re.findall(r"[A-Za-z0-9@.\-]+", raw)) <= words  # only whole words: ASCII runs are one unit
        assert chunk.text.endswith(raw)


@pytest.fixture(scope="module")
def tiny_count(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return lambda s: len(tokenizer(s, add_special_tokens=False).input_ids)


def test_chunks_fit_a_real_tokenizer(kestrel, tiny_count):
    docs = [*kestrel, make_doc("zh.md", ZH_MANUAL), make_doc("wifi.md", MIXED_MANUAL)]
    by_source = {d.source: d for d in docs}
    tokens = chunk_documents(docs, max_tokens=60, overlap_tokens=12, count_tokens=tiny_count)
    units = chunk_documents(docs, max_tokens=60, overlap_tokens=12)
    assert len(tokens) > len(units)  # the tiny 400-token vocabulary needs ~3 tokens per word
    for chunk in tokens:
        raw = by_source[chunk.source].text[chunk.start : chunk.end]
        assert tiny_count(raw) <= 60 or count_units(raw) == 1, raw


def test_long_paragraph_overlaps_by_measured_tokens(tiny_count):
    sentences = [f"Sentence number {i} tells the installer to check the drain hose." for i in range(40)]
    doc = make_doc("long.txt", " ".join(sentences))
    chunks = chunk_documents([doc], max_tokens=60, overlap_tokens=12, count_tokens=tiny_count)
    raws = [doc.text[c.start : c.end] for c in chunks]
    assert len(chunks) > 5
    assert all(tiny_count(r) <= 60 for r in raws)
    assert all(r.endswith(".") for r in raws[:-1])
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end
        assert tiny_count(doc.text[b.start : a.end]) <= 12 + 3  # overlap is summed per word: within a few tokens


def test_estimates_that_undercount_are_backed_off():
    """Counting characters: spaces between words count too, so summed word sizes undercount every span."""
    doc = make_doc("zh.md", ZH_MANUAL + "\n" + MIXED_MANUAL.replace("# ", "## "))
    chunks = chunk_documents([doc], max_tokens=50, overlap_tokens=10, count_tokens=len)
    assert all(len(doc.text[c.start : c.end]) <= 50 for c in chunks)
    assert max(len(doc.text[c.start : c.end]) for c in chunks) >= 40  # and still packs close to the bound


def test_counting_stays_linear_on_long_sections():
    counted = []

    def count(s: str) -> int:
        counted.append(len(s))
        return len(s)

    body = "".join(ZH_MANUAL.split("\n", 2)[2].split("\n\n")) * 20  # ~2,400 characters in one paragraph
    doc = make_doc("long.md", "# 长段落\n\n" + body.replace("\n", ""))
    chunks = chunk_documents([doc], max_tokens=100, overlap_tokens=20, count_tokens=count)
    assert len(chunks) > 20
    assert sum(counted) < 3 * len(doc.text)  # each character is counted two or three times, not once per window


def test_a_unit_longer_than_the_bound_is_kept_whole_and_alone(tiny_count):
    url = "https://kestrel.example.com/firmware/" + "x7" * 200
    text = f"Download the update from {url} and install it. Then restart the dishwasher and wait."
    doc = make_doc("url.txt", text)
    for count in (len, tiny_count):
        chunks = chunk_documents([doc], max_tokens=20, overlap_tokens=4, count_tokens=count)
        raws = [doc.text[c.start : c.end] for c in chunks]
        assert url in raws  # the one exception to the bound: a single unit is never cut
        assert all(count(r) <= 20 for r in raws if r != url)
        assert raws[-1].endswith("wait.")
