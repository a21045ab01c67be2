"""The status page's action token: where it is written, and when it is not."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from supervisor.mcp.page import action_token


def test_a_generated_token_is_written_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "page-token"
    token = action_token(path, None)
    assert path.read_bytes() == token + b"\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["page-token"]  # no temp file left
    assert action_token(path, None) != token  # a new one each start


def test_without_a_path_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert len(action_token(None, None)) >= 40
    assert list(tmp_path.iterdir()) == []


def test_the_token_file_one_wins_and_a_stale_generated_one_goes(tmp_path: Path) -> None:
    stale = tmp_path / "page-token"
    stale.write_text("old\n")
    assert action_token(stale, b"given") == b"given"
    assert not stale.exists()
