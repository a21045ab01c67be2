"""The lock file: deterministic TOML that tomllib reads back, atomic per-table updates."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.install.lockfile import (
    LOCK_NAME,
    LockError,
    dumps,
    read_lock,
    update_lock,
)

ENTRY = {
    "source": "pypi:mcp-server-time==2026.10.19",
    "python": "3.11.7",
    "packages": [
        {"name": "mcp-server-time", "version": "2026.10.19", "hashes": ["sha256:" + "a" * 64]},
        {
            "name": "tzdata",
            "version": "2026.1",
            "hashes": ["sha256:" + "b" * 64, "sha256:" + "c" * 64],
        },
    ],
}


def test_round_trip_through_tomllib() -> None:
    data = {"version": 1, "extensions": {"time": ENTRY}, "pins": {"time": {"files": "sha256:x"}}}
    assert tomllib.loads(dumps(data)) == data


def test_deterministic_and_sorted() -> None:
    a = dumps({"pins": {"b": {"x": 1}}, "extensions": {"z": {"y": 2}, "a": {"y": 3}}})
    b = dumps({"extensions": {"a": {"y": 3}, "z": {"y": 2}}, "pins": {"b": {"x": 1}}})
    assert a == b
    assert a.index("[extensions.a]") < a.index("[extensions.z]") < a.index("[pins.b]")


def test_update_keeps_other_sections(tmp_path: Path) -> None:
    update_lock(tmp_path, "extensions", "time", ENTRY)
    update_lock(tmp_path, "pins", "time", {"files": "sha256:abc", "count": 3})
    update_lock(tmp_path, "extensions", "other", {"source": "npm:x@1.0.0"})
    data = read_lock(tmp_path)
    assert data["extensions"]["time"] == ENTRY
    assert data["pins"]["time"] == {"files": "sha256:abc", "count": 3}
    update_lock(tmp_path, "pins", "time", None)
    assert "pins" not in read_lock(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name != LOCK_NAME]  # no temp file left


def test_missing_lock_is_empty(tmp_path: Path) -> None:
    assert read_lock(tmp_path) == {}


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("[extensions.time\n")
    with pytest.raises(LockError, match=r"spctl\.lock: not valid TOML"):
        read_lock(tmp_path)


def test_newer_version_refused(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("version = 9\n")
    with pytest.raises(LockError, match="version 9"):
        read_lock(tmp_path)


def test_section_must_be_a_table(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text('version = 1\nextensions = "x"\n')
    with pytest.raises(LockError, match="'extensions' must be a table"):
        read_lock(tmp_path)


def test_unwritable_value_refused() -> None:
    with pytest.raises(LockError, match=r"extensions\.x\.when: float|cannot be written"):
        dumps({"extensions": {"x": {"when": float("nan")}}})
    with pytest.raises(LockError, match="object cannot be written"):
        dumps({"extensions": {"x": {"what": object()}}})


_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)


def test_a_key_ending_in_a_newline_is_quoted() -> None:
    """``^…$`` matched "0\\n" as a bare key (``$`` matches before a final newline): the
    writer wrote a broken header; found by the property below in CI."""
    for tables in ({"0\n": {}}, {"0": {"0\n": ""}}, {"0": {}, "0\n": {}}):
        data = {"version": 1, "extensions": tables}
        assert tomllib.loads(dumps(data)) == data


def test_a_literal_ending_in_a_newline_is_written_quoted() -> None:
    from supervisor.install.lockfile import Literal

    data = {"version": 1, "pins": {"x": {"tree": [Literal("f:abc a.py\n")]}}}
    assert tomllib.loads(dumps(data))["pins"]["x"]["tree"] == ["f:abc a.py\n"]


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.dictionaries(
            _text.filter(bool),
            st.one_of(
                _text, st.integers(-(2**63), 2**63 - 1), st.booleans(), st.lists(_text, max_size=4)
            ),
            max_size=4,
        ),
        max_size=4,
    )
)
def test_any_strings_round_trip(tables: dict[str, dict[str, object]]) -> None:
    data = {"version": 1, "extensions": tables} if tables else {"version": 1}
    assert tomllib.loads(dumps(data)) == data


def test_literal_strings_round_trip_and_fall_back_when_they_cannot_be_literal() -> None:
    from supervisor.install.lockfile import Literal

    values = ["f:abc a.py", "it's", "tab\there", 'quote"', "back\\slash", "é"]
    text = dumps({"pins": {"x": {"tree": [Literal(v) for v in values]}}})
    assert "'f:abc a.py'" in text
    assert "'back\\slash'" in text  # no escapes in a literal string
    assert tomllib.loads(text)["pins"]["x"]["tree"] == values
