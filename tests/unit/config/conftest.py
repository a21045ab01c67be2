"""Fixtures for the registry tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.config.helpers import Tree


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tree:
    """An extensions/ tree with two packages; the cwd is its parent, so errors read extensions/…"""
    monkeypatch.chdir(tmp_path)
    made = Tree(tmp_path)
    made.package("servers/weather")
    made.package("modules/backup")
    return made
