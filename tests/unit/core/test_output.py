"""LineSplitter: worker output becomes whole lines, whatever the chunking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.core.output import LineSplitter


@pytest.mark.parametrize(
    ("chunks", "lines", "rest"),
    [
        ([b"a\nb\n"], ["a", "b"], []),
        ([b"a", b"b\n", b"c"], ["ab"], ["c"]),
        ([b"crlf\r\n"], ["crlf"], []),
        ([b"\xff\xfeok\n"], ["\\xff\\xfeok"], []),
        ([b""], [], []),
        ([b"\n\n"], ["", ""], []),
        ([b"partial at exit"], [], ["partial at exit"]),
    ],
)
def test_split(chunks: list[bytes], lines: list[str], rest: list[str]) -> None:
    s = LineSplitter()
    got: list[str] = []
    for c in chunks:
        got += s.feed(c)
    assert got == lines
    assert s.flush() == rest
    assert s.flush() == []


def test_long_line_is_cut_not_buffered() -> None:
    s = LineSplitter(max_line=10)
    got = s.feed(b"x" * 25)
    assert got == ["x" * 10 + " [line cut]", "x" * 10 + " [line cut]"]
    assert s.feed(b"yy\nz\n") == ["xxxxxyy", "z"]


def test_megabyte_line() -> None:
    s = LineSplitter()
    got = s.feed(b"a" * 1_000_000 + b"\nnext\n")
    assert sum(len(line.removesuffix(" [line cut]")) for line in got[:-1]) == 1_000_000
    assert got[-1] == "next"


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_any_chunking_gives_the_same_lines(data: bytes, cuts: list[int]) -> None:
    whole = LineSplitter(max_line=64)
    expected = whole.feed(data) + whole.flush()
    s = LineSplitter(max_line=64)
    got: list[str] = []
    prev = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        got += s.feed(data[prev:cut])
        prev = cut
    got += s.feed(data[prev:]) + s.flush()
    assert got == expected
