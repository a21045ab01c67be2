"""Helpers for the registry tests: fixture extension trees written into ``tmp_path``."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

from supervisor.config import LoadResult, load_registry


class Tree:
    """An ``extensions/`` directory under construction."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "extensions"
        self.root.mkdir()

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def servers(self, text: str | bytes) -> Path:
        return self.write("servers.yaml", text)

    def modules(self, text: str | bytes) -> Path:
        return self.write("modules.yaml", text)

    def package(self, relative: str) -> Path:
        """A Python package directory (with ``__init__.py``) inside the tree."""
        directory = self.root / relative
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "__init__.py").write_text("", encoding="utf-8")
        return directory

    def load(self, environ: Mapping[str, str] | None = None) -> LoadResult:
        return load_registry(self.root, environ={} if environ is None else environ)


def lines(result: LoadResult) -> list[str]:
    return [str(error) for error in result.errors]
