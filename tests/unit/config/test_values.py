"""Value parsers: durations, sizes, CPU shares, ${VAR} expansion, Secret and FrozenDict."""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config import (
    ExpansionError,
    FrozenDict,
    Secret,
    expand,
    parse_cpu,
    parse_duration,
    parse_size,
    thaw,
)
from supervisor.config.values import freeze

MiB = 1024**2
GiB = 1024**3


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        (" 30s ", 30.0),
        ("30", 30.0),
        ("0", 0.0),
        (10, 10.0),
        (2.5, 2.5),
    ],
)
def test_duration_parses(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "raw",
    ["lots", "30x", "", "   ", "-5s", "30S", "5mins", "ms", "1e3s", "1h2", "s30", -1, True,
     None, [1], {"a": 1}, math.inf, math.nan],
)  # fmt: skip
def test_duration_refuses(raw: object) -> None:
    with pytest.raises(ValueError, match="expected a duration like 30s"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("512MiB", 512 * MiB),
        ("512M", 512 * MiB),
        ("1G", GiB),
        ("1GiB", GiB),
        ("1.5G", int(1.5 * GiB)),
        ("1K", 1024),
        ("1KiB", 1024),
        ("800KB", 800_000),
        ("1MB", 1_000_000),
        ("2TB", 2 * 10**12),
        ("1T", 1024**4),
        ("42B", 42),
        ("1024", 1024),
        ("256 MiB", 256 * MiB),
        (4096, 4096),
        (1024.0, 1024),
        (0, 0),
    ],
)
def test_size_parses(raw: object, size: int) -> None:
    assert parse_size(raw) == size


@pytest.mark.parametrize(
    "raw",
    ["lots", "", "1.5", "1g", "1 Gb", "-1G", "1KiBB", "1P", "1Ki", "G", -5, True, 1.5, None, [1]],
)
def test_size_refuses(raw: object) -> None:
    with pytest.raises(ValueError, match="expected a size like 512MiB or 1G"):
        parse_size(raw)


def test_size_message_is_the_documented_one() -> None:
    with pytest.raises(ValueError, match=r"^expected a size like 512MiB or 1G, got 'lots'$"):
        parse_size("lots")


@pytest.mark.parametrize(
    ("raw", "cores"),
    [("50%", 0.5), ("150%", 1.5), ("12.5%", 0.125), (1.5, 1.5), (2, 2.0), ("1.5", 1.5)],
)
def test_cpu_parses(raw: object, cores: float) -> None:
    assert parse_cpu(raw) == pytest.approx(cores)


@pytest.mark.parametrize("raw", ["0%", 0, -1, "-50%", "lots", "%", "", True, None, math.inf, "1c"])
def test_cpu_refuses(raw: object) -> None:
    with pytest.raises(ValueError, match=r"expected a CPU share like 50% or 1\.5"):
        parse_cpu(raw)


@pytest.mark.parametrize(
    ("text", "environ", "expanded", "used"),
    [
        ("plain", {}, "plain", False),
        ("${A}", {"A": "x"}, "x", True),
        ("a-${A}-b", {"A": "x"}, "a-x-b", True),
        ("${A}${B}", {"A": "1", "B": "2"}, "12", True),
        ("${A}", {"A": ""}, "", True),
        ("${B:-def}", {}, "def", True),
        ("${B:-def}", {"B": ""}, "def", True),  # :- as in the shell: unset or empty
        ("${B:-def}", {"B": "set"}, "set", True),
        ("${B:-}", {}, "", True),
        ("${B:-a b: c}", {}, "a b: c", True),
        ("${A:-${B}}", {"B": "y"}, "y", True),
        ("${A:-${B}}", {"A": "x"}, "x", True),  # the unused default is not expanded
        ("$${A}", {"A": "x"}, "${A}", False),
        ("$$${A}", {"A": "x"}, "$${A}", False),
        ("$A and $", {"A": "x"}, "$A and $", False),
        ("costs $5}", {}, "costs $5}", False),
        ("$$", {}, "$$", False),
    ],
)
def test_expand(text: str, environ: dict[str, str], expanded: str, used: bool) -> None:
    assert expand(text, environ) == (expanded, used)


@pytest.mark.parametrize(
    ("text", "environ", "message", "variable"),
    [
        ("${UNSET}", {}, "environment variable UNSET is not set", "UNSET"),
        ("x ${A} ${B}", {"A": "1"}, "environment variable B is not set", "B"),
        ("${A:-${B}}", {}, "environment variable B is not set", "B"),
        ("${", {}, "malformed variable reference", None),
        ("${1A}", {}, "malformed variable reference", None),
        ("${A", {}, "expected '}'", None),
        ("${A-x}", {}, "expected '}'", None),
        ("${A:-x", {}, "unclosed variable reference", None),
    ],
)
def test_expand_refuses(
    text: str, environ: dict[str, str], message: str, variable: str | None
) -> None:
    with pytest.raises(ExpansionError, match=message.replace("(", r"\(")) as info:
        expand(text, environ)
    assert info.value.variable == variable


class TestSecret:
    """A Secret shows itself nowhere but through reveal()."""

    def test_redacted_everywhere(self) -> None:
        secret = Secret("hunter2")
        for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "%s" % secret):  # noqa: UP031
            assert "hunter2" not in shown
        assert "hunter2" not in repr([secret, {"k": secret}])
        assert secret.reveal() == "hunter2"

    def test_equality_and_hash_by_value(self) -> None:
        assert Secret("a") == Secret("a")
        assert Secret("a") != Secret("b")
        assert Secret("a") != "a"
        assert len({Secret("a"), Secret("a"), Secret("b")}) == 2

    def test_immutable_and_picklable(self) -> None:
        secret = Secret("a")
        with pytest.raises(AttributeError):
            secret._value = "b"
        assert pickle.loads(pickle.dumps(secret)) == secret


class TestFrozenDict:
    """Read-only, hashable and equal to any mapping with the same items."""

    def test_behaves_like_a_read_only_mapping(self) -> None:
        frozen = FrozenDict({"a": 1})
        assert frozen == {"a": 1}
        assert frozen == FrozenDict({"a": 1})
        assert frozen != {"a": 2}
        assert hash(frozen) == hash(FrozenDict([("a", 1)]))
        with pytest.raises(TypeError):
            frozen["a"] = 2  # type: ignore[index]

    def test_freeze_and_thaw_round_trip(self) -> None:
        data = {"a": [1, {"b": "c"}], "d": None}
        frozen = freeze(data)
        assert isinstance(frozen["a"], tuple)
        hash(frozen)
        assert thaw(frozen) == data

    def test_freeze_refuses_non_plain_data(self) -> None:
        with pytest.raises(TypeError, match="unsupported value of type set"):
            freeze({"a": {1, 2}})


_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_FACTORS = {"": 1, "B": 1, "K": 1024, "KiB": 1024, "KB": 1000, "M": MiB, "MiB": MiB,
                 "MB": 10**6, "G": GiB, "GiB": GiB, "GB": 10**9, "T": 1024**4,
                 "TB": 10**12}  # fmt: skip


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(_DURATION_FACTORS)))
def test_duration_property(number: int, unit: str) -> None:
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * _DURATION_FACTORS[unit])


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(_SIZE_FACTORS)))
def test_size_property(number: int, unit: str) -> None:
    assert parse_size(f"{number}{unit}") == number * _SIZE_FACTORS[unit]


@given(st.one_of(st.text(max_size=30), st.from_regex(r"[0-9. ]{0,6}(ms|s|m|h|d|[KMGT]i?B?)?")))
def test_parsers_only_raise_value_error(text: str) -> None:
    for parser in (parse_duration, parse_size, parse_cpu):
        try:
            result = parser(text)
        except ValueError:
            continue
        assert result >= 0


@given(st.text(max_size=40), st.dictionaries(st.sampled_from("AB"), st.text(max_size=5)))
def test_expand_only_raises_expansion_error(text: str, environ: dict[str, str]) -> None:
    try:
        expanded, used = expand(text, environ)
    except ExpansionError:
        return
    if "$" not in text:
        assert (expanded, used) == (text, False)


_HUGE: list[object] = [10**400, -(10**400), "9" * 400]


@pytest.mark.parametrize("parser", [parse_duration, parse_cpu])
@pytest.mark.parametrize("raw", _HUGE)
def test_huge_numbers_are_refused(parser: Callable[[object], float], raw: object) -> None:
    with pytest.raises(ValueError, match=r"^expected .{,150}$"):
        parser(raw)


def test_huge_sizes_are_exact() -> None:
    assert parse_size(10**400) == 10**400
    assert parse_size("9" * 400) == int("9" * 400)
    with pytest.raises(ValueError, match="not negative"):
        parse_size(-(10**400))
