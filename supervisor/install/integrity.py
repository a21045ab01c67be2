"""The check before each start (DESIGN §10): does the extension still match its pin, and does
its signature verify? Synchronous (file reads, ``ssh-keygen``): the core runs it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.config import Extension
from supervisor.install.lockfile import LockError, lock_path, read_lock
from supervisor.install.pins import (
    PinError,
    changes,
    compute_for,
    extensions_root,
    pinned_table,
)
from supervisor.install.signing import SigningError, verify

__all__ = ["Verdict", "check"]


@dataclass(frozen=True)
class Verdict:
    """``label``: ``unpinned``, ``pinned``, ``signed`` or ``pinned, signed`` (what ``spctl
    status`` shows); ``problem``: why it must not start (``integrity: …``), or None."""

    label: str
    problem: str | None = None
    digest: str | None = None


def check(ext: Extension) -> Verdict:
    """Recompute ``ext``'s digest and compare it with its pin; verify its signature."""
    if ext.kind == "front":  # spctl's own MCP front, not an extension on disk
        return Verdict("unpinned")
    root = extensions_root(ext)
    signature, allowed = ext.signature, ext.allowed_signers
    signed = signature is not None and allowed is not None
    label = "signed" if signed else "unpinned"
    try:
        lock = read_lock(root) if lock_path(root).exists() else {}
        pinned = pinned_table(lock, ext.name, lock_path(root))
        if pinned is None and not signed:
            return Verdict("unpinned")
        label = ("pinned, signed" if signed else "pinned") if pinned is not None else label
        now = compute_for(ext, root, lock)
    except (LockError, PinError, OSError) as exc:
        return Verdict(label, f"integrity: {exc}")
    if pinned is not None and pinned.digest != now.digest:
        return Verdict(label, f"integrity: {changes(pinned, now).describe()}", now.digest)
    if signature is not None and allowed is not None:
        try:
            principal = verify(now.digest, signature, allowed)
        except SigningError as exc:
            return Verdict(label, f"integrity: {exc}", now.digest)
        return Verdict(f"{label} by {principal}", None, now.digest)
    return Verdict(label, None, now.digest)
