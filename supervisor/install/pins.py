"""Integrity pins: a SHA-256 digest of an extension's files, kept in ``spctl.lock`` (DESIGN §10).

What is pinned: the extension's ``path`` tree (a package directory, a ``.py`` file, or a stdio
server's working directory); for a ``command:`` entry without ``path:``, the file its first
word names when that file is inside the extensions directory; and the ``digest`` the
environment builder records in ``[extensions.NAME]`` when there is one (kept as the pin's
``env``).

The tree is walked in sorted order, never following a symlink: a symlink counts by its target
string (its SHA-256), a file by its relative path, whether it is executable and the SHA-256 of
its content.
Caches and droppings (``__pycache__``, ``*.pyc``, VCS directories, editor swap and backup files)
are left out, so running an extension does not change its pin. The digest covers every record
and is what a signature signs (:mod:`supervisor.install.signing`); the per-file records are kept
in the lock too, so a mismatch can say which files changed.

``[pins.NAME]`` in the lock::

    [pins.hello]
    digest = "sha256:…"
    files = 3
    tree = [
        'f:<sha256> __init__.py',  # f: a file, x: an executable file: the content's SHA-256
        'x:<sha256> run.sh',
        'l:<sha256> data',         # l: a symlink: its target string's SHA-256
    ]

The digest is the SHA-256 of the tree's records and the env string, so a tree edited by hand
no longer matches it (and is refused). The records are TOML literal strings: ``tomllib`` reads
a thousand of them in ~3 ms (basic strings: ~16 ms), which keeps the check before each start
inside its budget.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.config import Extension
from supervisor.install.envlock import SECTION as ENV_SECTION
from supervisor.install.lockfile import Literal, LockError, read_lock, update_lock

__all__ = [
    "PIN_SECTION",
    "Changes",
    "PinError",
    "Tree",
    "changes",
    "compute",
    "digest_of",
    "extensions_root",
    "pin_extension",
    "pin_table",
    "pinned_table",
    "target_of",
    "unpin_extension",
]

PIN_SECTION = "pins"
_FORMAT = b"spctl-pin-v1\n"
_CHUNK = 1 << 20
_SKIP_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".svn", ".bzr", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)
_SKIP_NAMES = frozenset({".git", ".DS_Store", "Thumbs.db", ".directory"})
_SKIP_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", ".swx", "~", ".orig", ".rej")
_RECORD = re.compile(r"[fxl]:[0-9a-f]{64}")
_RECORD_LEN = 66
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class PinError(Exception):
    """The pin cannot be computed, read or recorded; the message names the file and cause."""


@dataclass(frozen=True)
class Tree:
    """What was pinned: the digest, and one record per file (``f:``/``x:``/``l:`` + SHA-256)."""

    digest: str  # "sha256:<hex>"
    files: Mapping[str, str] = field(default_factory=dict)
    env: str | None = None


@dataclass(frozen=True)
class Changes:
    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    env: bool = False  # the environment's digest differs

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed or self.env)

    def names(self) -> list[str]:
        """Every file that differs, sorted, marked when added or removed."""
        marked = [(n, "") for n in self.changed]
        marked += [(n, " (new)") for n in self.added] + [(n, " (removed)") for n in self.removed]
        return [n + mark for n, mark in sorted(marked)]

    def describe(self, limit: int = 5) -> str:
        """``3 files changed since pinned: a.py, b.py, c.py`` (at most ``limit`` names, then …;
        no names when ``limit`` is 0)."""
        parts = []
        names = self.names()
        if names:
            noun = "file" if len(names) == 1 else "files"
            part = f"{len(names)} {noun} changed since pinned"
            if limit > 0:
                part += ": " + ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
            parts.append(part)
        if self.env:
            parts.append("its environment changed since pinned")
        return "; ".join(parts) or "the digest differs from the pin"


def extensions_root(ext: Extension) -> Path:
    """The extensions directory an entry was loaded from (where ``spctl.lock`` lives)."""
    return ext.source.file.parent.resolve()


def target_of(ext: Extension, root: Path) -> Path | None:
    """What of ``ext`` is on disk to pin: its ``path``, else its command's file inside
    ``root``, else nothing (a command found on ``PATH``, a remote server)."""
    if ext.path is not None:
        return ext.path
    if ext.command:
        first = ext.command[0]
        if "/" not in first:
            return None  # looked up on PATH (or in the extension's environment)
        candidate = Path(os.path.abspath(ext.source.file.parent / first))
        try:
            resolved = candidate.resolve()
        except (OSError, RuntimeError):
            return None
        if resolved != root and resolved.is_relative_to(root) and resolved.is_file():
            return candidate
    return None


def _skipped(name: str, is_dir: bool) -> bool:
    if is_dir:
        return name in _SKIP_DIRS
    if name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES):
        return True
    return name.startswith(".#") or (name.startswith("#") and name.endswith("#"))


def _hash_file(path: str) -> tuple[str, bool]:
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        want = min(st.st_size, _CHUNK) + 1
        data = os.read(fd, want)
        h = hashlib.sha256(data)
        if len(data) == want:  # larger than it said (or than a chunk): read on to the end
            while chunk := os.read(fd, _CHUNK):
                h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), bool(st.st_mode & 0o111)


def _link(path: str) -> str:
    return "l:" + hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest()


def _record(full: str, st_mode: int) -> str | None:
    if stat.S_ISLNK(st_mode):
        return _link(full)
    if stat.S_ISREG(st_mode):
        digest, executable = _hash_file(full)
        return ("x:" if executable else "f:") + digest
    return None  # a socket or fifo: not content


def _walk(top: str, prefix: str, out: dict[str, str], skip: frozenset[str]) -> None:
    with os.scandir(top) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        is_dir = entry.is_dir(follow_symlinks=False)
        if _skipped(entry.name, is_dir) or entry.path in skip:
            continue
        rel = prefix + entry.name
        if is_dir:
            _walk(entry.path, rel + "/", out, skip)
            continue
        if entry.is_symlink():
            out[rel] = _link(entry.path)
        elif entry.is_file(follow_symlinks=False):  # d_type: no stat; the mode comes from fstat
            digest, executable = _hash_file(entry.path)
            out[rel] = ("x:" if executable else "f:") + digest


def digest_of(files: Mapping[str, str], env: str | None) -> str:
    """The digest of the records (in sorted path order) and of the env string."""
    h = hashlib.sha256(_FORMAT)
    for rel in sorted(files):
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + files[rel].encode() + b"\n")
    if env is not None:
        h.update(b"\0env\0" + env.encode() + b"\n")
    return "sha256:" + h.hexdigest()


def compute(
    target: Path | None, env: str | None = None, skip: frozenset[str] = frozenset()
) -> Tree:
    """Walk ``target`` (a directory, a file or None) and digest it with ``env``; the paths in
    ``skip`` (the signature file, when it lies in the tree) are left out."""
    files: dict[str, str] = {}
    if target is not None:
        try:
            st = os.lstat(target)
            if stat.S_ISDIR(st.st_mode):
                _walk(str(target), "", files, skip)
            else:
                record = _record(str(target), st.st_mode)
                if record is not None:
                    files[target.name] = record
        except OSError as exc:
            where = exc.filename or target
            raise PinError(f"{where}: cannot read: {exc.strerror or exc}") from None
    return Tree(digest_of(files, env), files, env)


def _env_of(lock: Mapping[str, Any], name: str) -> str | None:
    """The digest of the extension's environment (supervisor.install.envlock), if it has one."""
    table = lock.get(ENV_SECTION, {}).get(name)
    env = table.get("digest") if isinstance(table, Mapping) else None
    return env if isinstance(env, str) else None


def _read(root: Path) -> dict[str, Any]:
    try:
        return read_lock(root)
    except LockError as exc:
        raise PinError(str(exc)) from None


def compute_for(ext: Extension, root: Path, lock: Mapping[str, Any] | None = None) -> Tree:
    """The tree of ``ext`` as it is on disk now (with its env string from the lock)."""
    lock = _read(root) if lock is None else lock
    return compute(target_of(ext, root), _env_of(lock, ext.name), _own(ext))


def _own(ext: Extension) -> frozenset[str]:
    """The entry's signature and allowed-signers files: never part of what they sign."""
    return frozenset(str(p) for p in (ext.signature, ext.allowed_signers) if p is not None)


def pin_table(tree: Tree) -> dict[str, Any]:
    """``[pins.NAME]`` for ``tree``."""
    table: dict[str, Any] = {"digest": tree.digest, "files": len(tree.files)}
    if tree.env is not None:
        table["env"] = tree.env
    table["tree"] = [Literal(f"{tree.files[rel]} {rel}") for rel in sorted(tree.files)]
    return table


def pinned_table(lock: Mapping[str, Any], name: str, where: Path) -> Tree | None:
    """The pin recorded for ``name``, or None; a malformed or inconsistent one (edited by hand)
    is a PinError naming the lock."""
    table = lock.get(PIN_SECTION, {}).get(name)
    if table is None:
        return None
    bad = PinError(f"{where}: [pins.{name}] is malformed (run `spctl pin {name}` again)")
    if not isinstance(table, Mapping):
        raise bad
    digest, records, env = table.get("digest"), table.get("tree", []), table.get("env")
    if not isinstance(digest, str) or not isinstance(records, list):
        raise bad
    if not (env is None or isinstance(env, str)):
        raise bad
    files: dict[str, str] = {}
    for item in records:
        if not isinstance(item, str) or len(item) <= _RECORD_LEN + 1 or item[_RECORD_LEN] != " ":
            raise bad
        if not _RECORD.fullmatch(item, 0, _RECORD_LEN):
            raise bad
        files[item[_RECORD_LEN + 1 :]] = item[:_RECORD_LEN]
    if digest_of(files, env) != digest:
        raise PinError(
            f"{where}: [pins.{name}] is inconsistent: its digest does not match its files "
            f"(edited by hand?); run `spctl pin {name}` again"
        )
    return Tree(digest, files, env)


def changes(pinned: Tree, now: Tree) -> Changes:
    """What differs between the pin and the tree on disk now."""
    old, new = pinned.files, now.files
    return Changes(
        changed=tuple(sorted(n for n in old.keys() & new.keys() if old[n] != new[n])),
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        env=pinned.env != now.env,
    )


def pin_extension(ext: Extension, root: Path) -> Tree:
    """Record the pin of ``ext`` as it is now in ``root``'s lock."""
    lock = _read(root)
    target = target_of(ext, root)
    env = _env_of(lock, ext.name)
    if target is None and env is None:
        raise PinError(
            f"{ext.name}: nothing to pin: no path: and no command file inside {root.name}/ "
            "(and no environment recorded in the lock)"
        )
    tree = compute(target, env, _own(ext))
    try:
        update_lock(root, PIN_SECTION, ext.name, pin_table(tree))
    except (LockError, OSError) as exc:
        raise PinError(f"{root / 'spctl.lock'}: cannot write: {exc}") from None
    return tree


def unpin_extension(name: str, root: Path) -> bool:
    """Remove the pin of ``name``; False when it had none."""
    if _read(root).get(PIN_SECTION, {}).get(name) is None:
        return False
    try:
        update_lock(root, PIN_SECTION, name, None)
    except (LockError, OSError) as exc:
        raise PinError(f"{root / 'spctl.lock'}: cannot write: {exc}") from None
    return True
