"""The synth/select report: its numbers against counts taken from the input, one decodable PNG per chart in a
self-contained HTML page, escaped samples, and the CLI summary."""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter

import matplotlib.image
import pytest
from rich.console import Console

from hangjia.instruct.report import print_summary, write_report
from hangjia.instruct.synth import QAPair

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def make_pairs() -> list[QAPair]:
    pairs = []
    for i in range(12):
        pairs.append(QAPair(f"What is the limit of part {i}?", f"{i} kg", "table", f"a#{i}", "a.pdf", "extractive"))
    for i in range(5):
        q = f"Why does step {i} come before step {i + 1} in the start-up sequence?"
        pairs.append(QAPair(q, "Because the pump must be primed first.", "why", f"b#{i}", "b.md", "self_qa"))
    pairs.append(QAPair("<script>alert('x')</script> & more?", "a < b", "faq", "c#0", "c.md", "kg"))
    return pairs


DROPS = {
    "extractive": Counter({"ungrounded": 7, "too_long": 2}),
    "self_qa": Counter({"ungrounded": 3, "duplicate": 4}),
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    pairs = make_pairs()
    summary = write_report(
        tmp_path,
        "Synth report",
        pairs,
        drops=DROPS,
        counts={"chunks": 40, "seconds": 12.5},
        extra_tables={"Teacher": [{"model": "tiny", "requests": 9}, {"model": "other", "cost": 0.5}]},
    )
    return tmp_path, pairs, summary


def test_json_numbers_equal_counts_from_the_input(report):
    out, pairs, summary = report
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == summary
    assert summary["examples"] == len(pairs) == 18
    assert summary["generators"] == dict(Counter(p.generator for p in pairs))
    assert list(summary["generators"]) == ["extractive", "self_qa", "kg"]  # largest first
    assert summary["kinds"] == dict(Counter(p.kind for p in pairs))
    assert summary["drops"] == {stage: dict(c) for stage, c in DROPS.items()}
    assert summary["dropped"] == 16
    assert summary["counts"] == {"chunks": 40, "seconds": 12.5}
    for field, name in (("question", "question_words"), ("answer", "answer_words")):
        lengths = [len(getattr(p, field).split()) for p in pairs]
        stats = summary[name]
        assert (stats["min"], stats["max"]) == (min(lengths), max(lengths))
        assert stats["mean"] == pytest.approx(sum(lengths) / len(lengths), abs=0.01)
        hist = stats["histogram"]
        assert sum(hist["counts"]) == len(pairs)
        assert len(hist["edges"]) == len(hist["counts"]) + 1
        # One bin per word count, centred on it: the bin from n - 0.5 holds the examples with n words.
        assert hist["edges"] == [n - 0.5 for n in range(min(lengths), max(lengths) + 2)]
        for edge, count in zip(hist["edges"], hist["counts"], strict=False):
            assert count == lengths.count(edge + 0.5)


def test_html_has_one_valid_png_per_chart(report):
    out, _, summary = report
    page = (out / "report.html").read_text(encoding="utf-8")
    images = IMG.findall(page)
    charts = ["Examples per generator", "Drops per reason", "Question length", "Answer length", "Kinds"]
    assert summary["charts"] == charts
    assert len(images) == len(charts)
    for data in images:
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels.std() > 0  # something was drawn
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # self-contained


def test_samples_are_escaped(report):
    out, _, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more?" in page
    assert "<b>A</b> a &lt; b</p>" in page


def test_tables_in_html_and_markdown(report):
    out, _, _ = report
    page = (out / "report.html").read_text(encoding="utf-8")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "<h2>Teacher</h2>" in page and "## Teacher" in md
    assert "| model | requests | cost |" in md
    assert "| other |  | 0.5 |" in md
    assert "| self_qa | duplicate | 4 |" in md
    assert '<tr><td>extractive</td><td class="n">12</td><td>66.7%</td></tr>' in page
    assert "| chunks | 40 |" in md
    assert "&lt;script&gt;alert('x')&lt;/script&gt; &amp; more?" in md and "<script>" not in md


def test_samples_are_spread_through_each_generator(report):
    _, pairs, summary = report
    extractive = [s["question"] for s in summary["samples"]["extractive"]]
    assert extractive == [pairs[i].question for i in (0, 4, 8)]  # 12 pairs, 3 samples: every 4th
    assert len(summary["samples"]["kg"]) == 1


def test_no_drops_and_no_pairs(tmp_path):
    summary = write_report(tmp_path / "a", "clean", make_pairs(), drops={})
    assert "Drops per reason" not in summary["charts"]
    assert len(IMG.findall((tmp_path / "a" / "report.html").read_text())) == len(summary["charts"]) == 4

    summary = write_report(tmp_path / "b", "empty", [], drops={"select": Counter({"near_duplicate": 3})})
    assert summary["charts"] == ["Drops per reason"]
    assert summary["examples"] == 0 and summary["samples"] == {}
    assert len(IMG.findall((tmp_path / "b" / "report.html").read_text())) == 1


def test_user_turn_shown_for_retrieval_examples(tmp_path):
    pair = QAPair("How wide?", "900 mm", "rag", "s#1", "s.md", "raft", prompt="Context:\n[1] (s.md) <900 mm>")
    summary = write_report(tmp_path, "rag", [pair], drops={})
    assert summary["samples"]["raft"][0]["user_turn"] == pair.prompt
    assert "<pre>Context:\n[1] (s.md) &lt;900 mm&gt;</pre>" in (tmp_path / "report.html").read_text()


def test_print_summary(report):
    _, _, summary = report
    console = Console(record=True, width=120)
    print_summary(console, summary)
    text = console.export_text()
    assert "18 examples" in text and "dropped: 16" in text
    assert re.search(r"extractive\s.*\s12\s.*66\.7%", text)
    assert re.search(r"self_qa\s.*\sduplicate\s.*\s4", text)
    assert "chunks=40" in text
