"""``extensions/spctl.lock``: read it, and rewrite it atomically one table at a time.

The lock is TOML, written by spctl, reviewed and committed with the registry (DESIGN §9–§10).
Its top level holds ``version = 1`` and one table per *section* (``extensions``: what each
extension's environment is built from; ``pins``: digests of its files), each a table per
extension name::

    version = 1

    [extensions.time]
    source = "pypi:mcp-server-time==2026.10.19"
    python = "3.11.7"

    [[extensions.time.packages]]
    name = "mcp-server-time"
    version = "2026.10.19"
    hashes = ["sha256:…"]

    [pins.time]
    files = "sha256:…"

Writers own their section: ``update_lock`` replaces one extension's table in one section and
keeps everything else as it was read. The writer is deterministic (sections and names sorted,
keys in the order given) so a re-lock that changes nothing rewrites the same bytes. Reading uses
``tomllib``; writing supports what the lock holds: strings, integers, booleans, floats, lists of
those, nested tables and arrays of tables.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor.atomic import dir_lock, write_atomic

__all__ = [
    "LOCK_NAME",
    "LOCK_VERSION",
    "Literal",
    "LockError",
    "dumps",
    "lock_path",
    "read_lock",
    "update_lock",
    "write_lock",
]

LOCK_NAME = "spctl.lock"
LOCK_VERSION = 1

_HEADER = "# Written by spctl (spctl lock / spctl pin). Commit it with the registry; do not edit.\n"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: "$" would let "a\n" through
_LITERAL_OK = re.compile(r"[^'\x00-\x1f\x7f]*")  # no quote, no control character


class Literal(str):
    """A string written as a TOML literal string (``'…'``) when it can be one: ``tomllib``
    reads those several times faster than basic strings (long lists of them: pins)."""

    __slots__ = ()


class LockError(Exception):
    """The lock cannot be read or written; the message names the file and the cause."""


def lock_path(extensions_dir: Path) -> Path:
    return extensions_dir / LOCK_NAME


def read_lock(extensions_dir: Path) -> dict[str, Any]:
    """The lock's content; ``{}`` when there is none. A lock of a newer format is refused."""
    path = lock_path(extensions_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{path}: not valid TOML: {exc}") from None
    version = data.get("version", LOCK_VERSION)
    if version != LOCK_VERSION:
        raise LockError(f"{path}: lock format version {version!r}; this spctl reads {LOCK_VERSION}")
    for section, tables in data.items():
        if section != "version" and not isinstance(tables, dict):
            raise LockError(f"{path}: {section!r} must be a table of extensions")
    return data


def update_lock(
    extensions_dir: Path, section: str, name: str, table: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Replace (``None``: remove) ``[section.name]``, keep the rest; returns what was written."""
    with dir_lock(extensions_dir):  # one read-modify-write at a time
        data = read_lock(extensions_dir)
        tables = dict(data.get(section, {}))
        if table is None:
            tables.pop(name, None)
        else:
            tables[name] = dict(table)
        if tables:
            data[section] = tables
        else:
            data.pop(section, None)
        write_lock(extensions_dir, data)
        return data


def write_lock(extensions_dir: Path, data: Mapping[str, Any]) -> None:
    """Write the whole lock: a temp file beside it, fsync, rename (never half-written)."""
    write_atomic(lock_path(extensions_dir), dumps(data).encode(), mode=0o644)


def dumps(data: Mapping[str, Any]) -> str:
    """The TOML text of ``data`` (``version`` first, then sections and names sorted)."""
    lines = [_HEADER.rstrip("\n"), f"version = {LOCK_VERSION}"]
    for section in sorted(k for k in data if k != "version"):
        tables = data[section]
        if not isinstance(tables, Mapping):
            raise LockError(f"lock section {section!r} must be a table")
        for name in sorted(tables):
            _table(lines, [section, name], tables[name])
    return "\n".join(lines) + "\n"


def _table(lines: list[str], path: list[str], table: Any, *, array: bool = False) -> None:
    if not isinstance(table, Mapping):
        raise LockError(f"{'.'.join(path)} must be a table")
    lines.append("")
    header = ".".join(_key(p) for p in path)
    lines.append(f"[[{header}]]" if array else f"[{header}]")
    nested: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value, [*path, key])}")
    for key, value in nested:
        if isinstance(value, Mapping):
            _table(lines, [*path, key], value)
        else:
            for item in value:
                _table(lines, [*path, key], item, array=True)


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _string(key)


def _value(value: Any, path: list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise LockError(f"{'.'.join(path)}: {value} cannot be written to the lock")
        return repr(value)
    if isinstance(value, Literal) and _LITERAL_OK.fullmatch(value):
        return f"'{value}'"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, Mapping) for v in value):
            raise LockError(f"{'.'.join(path)}: a list mixing tables and values")
        items = [_value(v, path) for v in value]
        one_line = "[" + ", ".join(items) + "]"
        if len(one_line) <= 80:
            return one_line
        return "[\n" + "".join(f"    {item},\n" for item in items) + "]"
    raise LockError(f"{'.'.join(path)}: {type(value).__name__} cannot be written to the lock")


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
