"""The one error type of the config package: a problem at a place in a registry file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ConfigError"]


@dataclass(frozen=True)
class ConfigError:
    """One problem in the registry, at a 1-based ``line``/``column`` of ``file``.

    ``line == 0`` means the problem concerns the whole file (too big, unreadable) or, for a
    missing directory, the directory itself. ``field`` is the path of the offending value in
    the YAML spelling (``servers[2].auth.clientSecret``; list indexes are 0-based), empty for
    file-level problems. ``extension`` names the entry the error belongs to; it is None when
    the error cannot be pinned on one entry with a usable name (see ``LoadResult.fatal``).
    Messages never contain the value of a secret.
    """

    file: Path
    line: int
    column: int
    field: str
    message: str
    extension: str | None = None

    @property
    def display_file(self) -> str:
        """``file`` relative to the current directory when it is under it."""
        try:
            return str(self.file.absolute().relative_to(Path.cwd()))
        except (ValueError, OSError):
            return str(self.file)

    def __str__(self) -> str:
        where = self.display_file
        if self.line > 0:
            where = f"{where}:{self.line}:{self.column}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.display_file,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
            "extension": self.extension,
        }
