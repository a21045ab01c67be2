"""write_atomic: whole or not at all, the final mode, no temp file left either way."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from supervisor.atomic import dir_lock, write_atomic


def test_replaces_with_the_mode_given(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    write_atomic(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    write_atomic(target, b"secret")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path, b"x")  # renaming a file over a directory fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_dir_lock_needs_the_directory(tmp_path: Path) -> None:
    with dir_lock(tmp_path):
        pass
    with pytest.raises(FileNotFoundError), dir_lock(tmp_path / "missing"):
        pass
