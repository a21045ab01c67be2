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
        # control characters never reach an operator's terminal raw (escape-sequence
        # injection through `spctl logs`): shown as \xNN like invalid UTF-8; a tab stays
        (
            [b"a\x1b[31mred\rb\x08\x07\x00z\tq\x7f\n"],
            ["a\\x1b[31mred\\x0db\\x08\\x07\\x00z\tq\\x7f"],
            [],
        ),
        (["\u009b2J csi\n".encode()], ["\\x9b2J csi"], []),  # C1 controls too
        (["é ✓\n".encode()], ["é ✓"], []),  # printable text untouched
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


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_pipe_reader_rate_limit_drops_and_counts() -> None:
    """Over the per-second budget lines are dropped whole, counted, and reading resumes cleanly."""
    import asyncio

    from supervisor.core.output import PipeReader

    async def scenario() -> tuple[list[str], list[tuple[int, int]]]:
        clock = _Clock()
        lines: list[str] = []
        drops: list[tuple[int, int]] = []
        r = PipeReader(
            lines.append, max_lines=3, on_drop=lambda n, b: drops.append((n, b)), clock=clock
        )
        r.data_received(b"a\nb\nc\n")  # budget used up
        r.data_received(b"d\ne\npart")  # dropped, ends mid-line
        r.data_received(b"ial\nf\n")  # still this second: dropped, ends on a newline
        clock.t = 1.5
        r.data_received(b"tail\ng\n")  # new window
        r.data_received(b"h\nmid")  # "h" is the 3rd line; "mid" waits for its end
        r.data_received(b"dle\ni")  # over: the half line and this are dropped, mid-line
        clock.t = 3.0
        r.data_received(b"-end\nj\n")  # new window: skips the rest of the dropped line
        r.eof_received()
        return lines, drops

    lines, drops = asyncio.run(scenario())
    assert lines == ["a", "b", "c", "tail", "g", "h", "j"]
    assert drops == [
        (4, len(b"d\ne\npart") + len(b"ial\nf\n")),
        (1, len(b"mid") + len(b"dle\ni")),
        (1, len(b"-end\n")),  # the resync, counted in the window where it happened
    ]
