"""The [n] markers an answer cites passages with: English and Chinese brackets, lists, ranges, out-of-range numbers."""

from __future__ import annotations

import pytest

from hangjia.core.citations import cited_numbers, mark_cited


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The drain pump is blocked [2].", [2]),
        ("Clean the filter [1][3] and reset it [1].", [1, 3]),
        ("Two years [1, 2].", [1, 2]),
        ("See [ 3 ;1 ]", [1, 3]),
        ("Steps [1-3] apply.", [1, 2, 3]),
        ("排水泵堵塞【1】。", [1]),
        ("保修两年［1，3］。", [1, 3]),
        ("请清洁过滤网【2】【3】，再重启[1、2]。", [1, 2, 3]),
        ("No citation here; E24 means a blocked drain.", []),
        ("Out of range: [4] [0] [2024] [4-9].", []),
        ("Mixed [2, 7] keeps what exists.", [2]),
        ("Not markers: [a] [1a] [] (1) {2} 1.", []),
        ("A link [1](http://example.com) still cites.", [1]),
    ],
)
def test_cited_numbers(answer, expected):
    assert cited_numbers(answer, passages=3) == expected


def test_no_passages_means_no_citations():
    assert cited_numbers("blocked [1]", passages=0) == []


def test_mark_cited_copies_the_records_with_cited_set_from_any_answer():
    records = [{"index": 1, "source": "a.md"}, {"index": 2, "source": "b.md"}, {"index": 3, "source": "c.md"}]
    marked = mark_cited(records, ["blocked [3]", "or [1]"])
    assert [c["cited"] for c in marked] == [True, False, True]
    assert [c["source"] for c in marked] == ["a.md", "b.md", "c.md"]
    assert "cited" not in records[0]  # the originals are left alone
    assert [c["cited"] for c in mark_cited(records, [])] == [False, False, False]
