"""The check before each start (DESIGN §10): does the extension still match its pin, and does
its signature verify? Synchronous (file reads, ``ssh-keygen``): the core runs it in a thread.

The lock is parsed once per version of the file (its inode, size and mtime), not at every start;
a pin's per-file records are read only when the digest differs, to name what changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.config import Extension
from supervisor.install.lockfile import LockError, lock_path, read_lock
from supervisor.install.pins import (
    PIN_SECTION,
    PinError,
    changes,
    compute_for,
    extensions_root,
    pinned_table,
)
from supervisor.install.signing import SigningError, verify

__all__ = ["Verdict", "check", "current_lock"]

_parsed: dict[Path, tuple[tuple[int, int, int], dict[str, Any]]] = {}


@dataclass(frozen=True)
class Verdict:
    """``label``: ``unpinned``, ``pinned``, ``signed by P`` or ``pinned, signed by P`` (what
    ``spctl status`` shows); ``problem``: why it must not start (``integrity: …``), or None."""

    label: str
    problem: str | None = None
    digest: str | None = None


def current_lock(root: Path) -> Mapping[str, Any]:
    """The lock's content, parsed again only when the file changed (read-only: shared). The
    core's reader before each start: the pin check here, the environment's lookup
    (supervisor.core.environments)."""
    try:
        st = os.stat(lock_path(root))
    except FileNotFoundError:
        return {}
    key = (st.st_ino, st.st_size, st.st_mtime_ns)
    hit = _parsed.get(root)
    if hit is not None and hit[0] == key:
        return hit[1]
    data = read_lock(root)
    _parsed[root] = (key, data)
    return data


def check(ext: Extension) -> Verdict:
    """Recompute ``ext``'s digest and compare it with its pin; verify its signature."""
    if ext.kind == "front":  # spctl's own MCP front, not an extension on disk
        return Verdict("unpinned")
    root = extensions_root(ext)
    signature, allowed = ext.signature, ext.allowed_signers
    signed = signature is not None and allowed is not None
    label = "signed" if signed else "unpinned"
    try:
        lock = current_lock(root)
        table = lock.get(PIN_SECTION, {}).get(ext.name)
        if table is None and not signed:
            return Verdict("unpinned")
        if table is not None:
            label = "pinned, signed" if signed else "pinned"
        now = compute_for(ext, root, lock)
        if table is not None and (
            not isinstance(table, Mapping) or table.get("digest") != now.digest
        ):
            pinned = pinned_table(lock, ext.name, lock_path(root))  # raises when malformed
            assert pinned is not None
            return Verdict(label, f"integrity: {changes(pinned, now).describe()}", now.digest)
    except (LockError, PinError, OSError) as exc:
        return Verdict(label, f"integrity: {exc}")
    if signature is not None and allowed is not None:
        try:
            principal = verify(now.digest, signature, allowed)
        except SigningError as exc:
            return Verdict(label, f"integrity: {exc}", now.digest)
        return Verdict(f"{label} by {principal}", None, now.digest)
    return Verdict(label, None, now.digest)
